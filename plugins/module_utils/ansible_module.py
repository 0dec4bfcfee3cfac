# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One shape for every module: build it, check libvirt, do the work, report.

The only file of module_utils that imports Ansible: the rest stays importable and testable
without it. A module's ``main()`` is ``run_module(ARGUMENT_SPEC, work)`` where
``work(params, check_mode)`` returns the result dict or raises a ``VirtfleetError``.
"""
from typing import Any, Callable, Dict, List, Optional

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import uri_secrets

Work = Callable[[Dict[str, Any], bool], Dict[str, Any]]


def _libvirt_import_error() -> Optional[str]:
    try:
        import libvirt  # noqa: F401  pylint: disable=unused-import
    except ImportError as exc:
        return str(exc)
    return None


def uri_secrets_in(value: Any, key: str = "") -> List[str]:
    """The secrets of every URI among a module's parameters (any option whose name ends in
    ``uri``, at any depth), so they are masked wherever Ansible prints arguments or results
    while the URIs themselves stay readable."""
    if isinstance(value, dict):
        return [secret for name, item in value.items() for secret in uri_secrets_in(item, name)]
    if isinstance(value, (list, tuple)):
        return [secret for item in value for secret in uri_secrets_in(item, key)]
    if isinstance(value, str) and key.endswith("uri"):
        return uri_secrets(value)
    return []


def finish(module: AnsibleModule, result: Dict[str, Any]) -> None:
    """Hands a result to Ansible: ``warnings`` become task warnings (Ansible returns them in
    the result's ``warnings``); ``failed`` makes it a failure with the same fields."""
    for warning in result.pop("warnings", None) or []:
        module.warn(warning)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


def run_module(argument_spec: Dict[str, Any], work: Work, needs_libvirt: bool = True,
               **module_kwargs: Any) -> None:
    """Builds the module (check mode supported), masks the secrets of its URIs, reports a
    missing libvirt-python with ``missing_required_lib``, runs ``work`` and maps a
    ``VirtfleetError`` to ``fail_json`` with the fields it carries."""
    module_kwargs.setdefault("supports_check_mode", True)
    module = AnsibleModule(argument_spec=argument_spec, **module_kwargs)
    module.no_log_values.update(uri_secrets_in(module.params))
    if needs_libvirt:
        problem = _libvirt_import_error()
        if problem:
            module.fail_json(msg=missing_required_lib("libvirt-python"), exception=problem)
    try:
        result = work(module.params, module.check_mode)
    except VirtfleetError as exc:
        module.fail_json(msg=exc.message, **exc.as_result())
    finish(module, result)
