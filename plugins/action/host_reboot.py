# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of virtfleet.cluster.host_reboot: asks the host's libvirt whether it is safe to
reboot (module_utils/host_empty.py, on the controller) and, only then, reboots it the way
ansible.builtin.reboot does (this class is that action, with the boot ids it reads kept). One
task where the role used four: the emptiness check, the boot id before, the reboot, the boot id
after; and no gap between the check and the reboot in which a guest could arrive unseen.
"""

from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action.reboot import ActionModule as RebootAction

from ansible_collections.virtfleet.cluster.plugins.module_utils import host_empty
from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import uri_secrets_in
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import HAS_LIBVIRT

# ansible.builtin.reboot's own options, passed to it as they are.
REBOOT_OPTIONS_SPEC = dict(
    reboot_command=dict(type="str"),
    boot_time_command=dict(type="str"),
    test_command=dict(type="str"),
    reboot_timeout=dict(type="int", default=600),
    connect_timeout=dict(type="int"),
    pre_reboot_delay=dict(type="int", default=0),
    post_reboot_delay=dict(type="int", default=0),
    msg=dict(type="str"),
    search_paths=dict(type="list", elements="str"),
)
ARGUMENT_SPEC = dict(host_empty.ARGUMENT_SPEC, **REBOOT_OPTIONS_SPEC)
# The commands that, given all three, leave nothing for the distribution's defaults to decide.
_COMMANDS = ("reboot_command", "boot_time_command", "test_command")


class ActionModule(RebootAction):
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._boot_ids = []

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        validation, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        params = dict(validation.validated_parameters)
        params["host"] = params["host"] or task_vars.get("inventory_hostname")
        outcome = {"changed": False, "rebooted": False, "elapsed": 0, "boot_id_before": None, "boot_id_after": None}
        try:
            failed, check = self._safe_to_reboot(params, task_vars)
        except VirtfleetError as failure:
            failed, check = True, dict(failure.as_result(), msg=failure.message)
        outcome.update(check)
        if not failed and self._task.check_mode:
            outcome.update(changed=True, msg="%s; would reboot it now" % check["msg"])
        elif not failed:
            outcome.update(self._reboot(tmp, task_vars, params))
            failed = outcome.get("failed", False)
        # As a module's result: what it was given (shown at -vvv), and the secrets inside URIs
        # masked wherever they are quoted (libvirt errors), the URIs staying readable.
        outcome.update(failed=failed, invocation={"module_args": params})
        return remove_values(outcome, set(validation._no_log_values) | set(uri_secrets_in(params)))

    def _safe_to_reboot(self, params, task_vars):
        """(failed, result) of the emptiness check, made on the controller; on the host when the
        controller lacks libvirt-python."""
        check_args = {name: params[name] for name in host_empty.ARGUMENT_SPEC}
        if HAS_LIBVIRT:
            return host_empty.safe_to_reboot(check_args, bool(self._task.check_mode))
        self._display.warning("libvirt-python is missing on the controller: asking the host itself whether it is "
                              "safe to reboot (module host_empty)")
        answer = self._execute_module(module_name="virtfleet.cluster.host_empty", module_args=check_args,
                                      task_vars=task_vars)
        return bool(answer.pop("failed", False)), answer

    def _reboot(self, tmp, task_vars, params):
        """ansible.builtin.reboot with the reboot options; adds the boot ids it read."""
        task_args = self._task.args
        self._task.args = {name: params[name] for name in REBOOT_OPTIONS_SPEC if params[name] is not None}
        self._boot_ids = []
        try:
            result = super().run(tmp, task_vars)
        finally:
            self._task.args = task_args
        result = dict(result, boot_id_before=self._boot_ids[0] if self._boot_ids else None)
        if result.get("rebooted") and not result.get("failed"):
            after = self._boot_ids[-1]
            result.update(boot_id_after=after, msg="%s rebooted (boot id %s -> %s) in %s s"
                          % (params["host"], result["boot_id_before"], after, result.get("elapsed")))
        return result

    def get_system_boot_time(self, distribution):
        # The first answer is the boot id before the reboot; the last, the one that differed.
        boot_id = super().get_system_boot_time(distribution)
        self._boot_ids.append(boot_id)
        return boot_id

    def get_distribution(self, task_vars):
        # ansible.builtin.reboot runs the setup module for the distribution's default commands;
        # with all three commands given there is nothing to default, so no module call for it.
        if all(self._task.args.get(name) for name in _COMMANDS):
            return {"name": "", "version": "", "family": ""}
        return super().get_distribution(task_vars)
