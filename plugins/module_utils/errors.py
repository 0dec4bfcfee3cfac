# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The root of every error the collection raises on purpose.

Each error carries the message people read and the result fields a task returns with it
(``result``): a module turns any ``VirtfleetError`` into ``fail_json(msg=..., **result)`` in
one place (``ansible_module.run_module``), so every failure reports alike.
"""
from typing import Any, Dict, Optional


class VirtfleetError(Exception):
    """A failure explained: ``message`` says what and how to fix it; ``result`` holds the
    fields returned with it (where the guests are, what was done before it)."""

    def __init__(self, message: str, result: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.message = message
        self.result = dict(result or {})

    def as_result(self) -> Dict[str, Any]:
        """The task result of this failure, without ``msg`` (the module adds it)."""
        return {key: value for key, value in self.result.items() if key != "msg"}
