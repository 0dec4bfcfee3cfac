"""The host_reboot action plugin's decisions: it reboots only after the host's libvirt said it is
safe (asked through libvirt's test driver: an empty node, and the driver's default node, which
runs a guest), hands ansible.builtin.reboot only its own options, and returns the boot ids the
reboot read. ansible.builtin.reboot itself is replaced by a small fake here; a real reboot is
what every rolling maintenance test on the lab does (tests/lab)."""
import pytest
from ansible.playbook.task import Task
from ansible.plugins.action.reboot import ActionModule as RebootAction

from ansible_collections.virtfleet.cluster.plugins.action import host_reboot

BUSY_URI = "test:///default"  # libvirt's test driver: one running guest, named "test"


@pytest.fixture(name="empty_uri")
def fixture_empty_uri(tmp_path):
    node = tmp_path / "node.xml"
    node.write_text("<node><cpu><mhz>2000</mhz></cpu><memory>1048576</memory></node>")
    return "test://%s" % node


def action(check_mode=False, **args):
    task = Task()
    task.args = dict(args)
    task.check_mode = check_mode
    return host_reboot.ActionModule(task=task, connection=None, play_context=None, loader=None, templar=None,
                                    shared_loader_obj=None)


class FakeReboot:
    """ansible.builtin.reboot's run: reads the boot id until it changed, as the real one does."""

    def __init__(self, boot_ids):
        self.boot_ids = list(boot_ids)
        self.task_args = None

    def install(self, monkeypatch):
        fake = self

        def run(plugin, tmp=None, task_vars=None):
            fake.task_args = dict(plugin._task.args)
            for _answer in fake.boot_ids:
                plugin.get_system_boot_time({"name": "", "version": "", "family": ""})
            return {"changed": True, "rebooted": True, "elapsed": 7}
        answers = iter(self.boot_ids)
        monkeypatch.setattr(RebootAction, "run", run)
        monkeypatch.setattr(RebootAction, "get_system_boot_time", lambda plugin, distribution: next(answers))
        return self


def test_a_host_running_a_guest_is_not_rebooted(monkeypatch):
    reboot = FakeReboot(["boot-1", "boot-2"]).install(monkeypatch)
    result = action(uri=BUSY_URI, host="hv-1", reboot_command="/bin/reboot-it").run(task_vars={})
    assert result["failed"] and not result["rebooted"] and reboot.task_args is None
    assert "hv-1 is not safe to reboot: it runs test (running)" in result["msg"]
    assert [g["name"] for g in result["guests"]] == ["test"]
    assert result["boot_id_before"] is None and result["boot_id_after"] is None


def test_an_empty_host_is_rebooted_with_the_reboot_options_only_and_says_its_boot_ids(monkeypatch, empty_uri):
    reboot = FakeReboot(["boot-1", "boot-1", "boot-2"]).install(monkeypatch)
    plugin = action(uri=empty_uri, reboot_command="/bin/reboot-it", reboot_timeout=120,
                    peers=[{"name": "hv-2", "uri": BUSY_URI}])
    result = plugin.run(task_vars={"inventory_hostname": "hv-1"})
    assert not result["failed"] and result["rebooted"] and result["changed"]
    assert (result["boot_id_before"], result["boot_id_after"]) == ("boot-1", "boot-2")
    assert result["msg"] == "hv-1 rebooted (boot id boot-1 -> boot-2) in 7 s"
    assert reboot.task_args == {"reboot_command": "/bin/reboot-it", "reboot_timeout": 120,
                                "pre_reboot_delay": 0, "post_reboot_delay": 0}
    assert plugin._task.args["peers"] == [{"name": "hv-2", "uri": BUSY_URI}]  # the task's own, given back


def test_check_mode_asks_and_says_it_would_reboot(monkeypatch, empty_uri):
    reboot = FakeReboot(["boot-1"]).install(monkeypatch)
    result = action(check_mode=True, uri=empty_uri, host="hv-1").run(task_vars={})
    assert result["changed"] and not result["rebooted"] and not result["failed"] and reboot.task_args is None
    assert result["msg"].endswith("safe to reboot; would reboot it now")


def test_a_daemon_that_does_not_answer_means_no_reboot(monkeypatch, tmp_path):
    reboot = FakeReboot(["boot-1"]).install(monkeypatch)
    result = action(uri="test://%s" % (tmp_path / "missing.xml"), host="hv-1").run(task_vars={})
    assert result["failed"] and not result["rebooted"] and reboot.task_args is None
    assert result["msg"].startswith("cannot tell whether hv-1 is safe to reboot, so not going on")


def test_the_distribution_is_asked_only_when_a_command_is_left_to_its_default(monkeypatch):
    asked = []
    monkeypatch.setattr(RebootAction, "get_distribution", lambda plugin, task_vars: asked.append(1) or {"name": "debian"})
    commands = {"reboot_command": "r", "boot_time_command": "b", "test_command": "t"}
    plugin = action()
    plugin._task.args = commands
    assert plugin.get_distribution({}) == {"name": "", "version": "", "family": ""} and not asked
    plugin._task.args = dict(commands, test_command=None)
    assert plugin.get_distribution({}) == {"name": "debian"} and asked == [1]
