# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of virtfleet.cluster.play_strategy: tells the task which strategy and serial
setting its play runs under, read from the play itself (no magic variable carries the strategy).
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase


def _play_of(task):
    """The play a task belongs to: up the parents (includes, blocks, roles) to the block that knows it."""
    node = task
    while node is not None:
        play = getattr(node, "_play", None)
        if play is not None:
            return play
        node = getattr(node, "_parent", None)
    return None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset()
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        play = _play_of(self._task)
        if play is None:
            result.update(failed=True, msg="play_strategy: this task is not part of a play (cannot read its strategy).")
            return result
        result.update(changed=False, strategy=play.strategy, serial=list(play.serial or []))
        return result
