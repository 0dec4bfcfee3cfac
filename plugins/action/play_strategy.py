# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of virtfleet.cluster.play_strategy: tells the task which strategy and serial
setting its play runs under, read from the play itself (no magic variable carries the strategy),
and with ``strategy`` / ``one_batch`` refuses a play of another shape in the same step.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.virtfleet.cluster.plugins.module_utils import play_shape


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
    _VALID_ARGS = frozenset(play_shape.ARGUMENT_SPEC)
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        _validation, params = self.validate_argument_spec(argument_spec=play_shape.ARGUMENT_SPEC)
        play = _play_of(self._task)
        if play is None:
            result.update(failed=True, msg="play_strategy: this task is not part of a play (cannot read its strategy).")
            return result
        serial = list(play.serial or [])
        result.update(changed=False, strategy=play.strategy, serial=serial)
        why = play_shape.refusal(params, play.strategy, serial, task_vars.get("ansible_play_batch") or [],
                                 task_vars.get("ansible_play_hosts") or [])
        if why:
            result.update(failed=True, msg=why)
        return result
