"""host_recovery module: the probe's verdict becomes the task's result (a live host fails the
task unless told otherwise), and the restart refuses without a fence."""
import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.modules import host_recovery


def params(**overrides):
    base = {spec: value.get("default") for spec, value in host_recovery.ARGUMENT_SPEC.items()}
    base.update(host="hv-a1", uri="qemu+tcp://127.0.0.1:1/system", address="127.0.0.1", ssh_port=1,
                retries=1, delay=0, timeout=0.5)
    base.update(overrides)
    return base


def test_a_silent_host_is_dead():
    result = host_recovery.work(params(state="probe"), False)
    assert result["dead"] and not result.get("failed") and result["msg"].startswith("hv-a1 is dead: ")


def test_a_live_host_fails_the_probe_unless_told_otherwise(monkeypatch):
    monkeypatch.setattr(host_recovery, "probe_host", lambda *args: {"dead": False, "reason": "its ssh answered",
                                                                    "probes": []})
    result = host_recovery.work(params(state="probe"), False)
    assert result["failed"] and result["msg"].startswith("hv-a1 is ALIVE: its ssh answered; its guests are not")
    assert not host_recovery.work(params(state="probe", fail_when_alive=False), False).get("failed")


def test_the_probe_needs_the_uri_and_address():
    with pytest.raises(VirtfleetError, match="needs uri and address"):
        host_recovery.work(params(state="probe", uri=None), False)


def test_a_restart_without_fence_is_refused_naming_the_guests():
    records = [{"name": "g1", "host": "hv-a1", "xml": "<domain/>"}, {"name": "g9", "host": "hv-a2", "xml": "<domain/>"}]
    with pytest.raises(VirtfleetError, match="no fence is confirmed") as refused:
        host_recovery.work(params(records=records), False)
    assert refused.value.result["guests"] == ["g1"]
