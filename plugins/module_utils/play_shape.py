# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The play shape a task needs (its strategy, every host in one batch) and the refusal of
another: the logic of virtfleet.cluster.play_strategy, apart from reading the play."""

from __future__ import annotations

ARGUMENT_SPEC = {
    "strategy": {"type": "str"},
    "one_batch": {"type": "bool", "default": False},
    "strategy_reason": {"type": "str", "default": ""},
    "batch_reason": {"type": "str", "default": ""},
}

# Strategies that run a play as the named one does (debug is linear with a debugger).
_EQUIVALENT = {"linear": ("linear", "debug")}


def short_name(strategy) -> str:
    """``ansible.builtin.linear`` -> ``linear``; other names as given."""
    name = str(strategy)
    for prefix in ("ansible.builtin.", "ansible.legacy."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def refusal(params: dict, strategy, serial: list, batch: list, play_hosts: list):
    """Why a play of ``strategy`` whose current batch is ``batch`` (of ``play_hosts``) cannot run
    the task that asks for ``params``; None when it can."""
    needed = params.get("strategy")
    if needed and short_name(strategy) not in _EQUIVALENT.get(needed, (needed,)):
        return ("This play needs the %s strategy and runs under strategy '%s' (from the play's `strategy:` keyword, "
                "or else the configured default, ANSIBLE_STRATEGY / [defaults] strategy)%s. Set `strategy: %s` on "
                "the play and run again. Nothing was changed."
                % (needed, strategy, _because(params.get("strategy_reason")), needed))
    if params.get("one_batch") and sorted(batch) != sorted(play_hosts):
        return ("This play must run every host in one batch, and it runs in batches (serial %s: this batch has %d of "
                "%d hosts)%s. Remove `serial` from the play and run again. Nothing was changed."
                % (", ".join(str(size) for size in serial), len(batch), len(play_hosts),
                   _because(params.get("batch_reason"))))
    return None


def _because(reason) -> str:
    return (": " + reason) if reason else ""
