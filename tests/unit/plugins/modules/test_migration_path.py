"""The migration_path module: its argument spec, result and failure, run as Ansible runs it."""
import os
import pwd
import socket

from ansible_collections.virtfleet.cluster.plugins.modules import migration_path as module
from tests.unit.module_main import run_module_main


def _closed_uri():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return "qemu+tcp://127.0.0.1:%d/session" % sock.getsockname()[1]


def test_every_peer_answering_passes_in_check_mode_too():
    for check_mode in (False, True):
        code, result = run_module_main(module, {"source": "hv-a1", "peers": [{"name": "hv-a2", "uri": "test:///default"}]},
                                       check_mode=check_mode)
        assert code == 0 and not result.get("failed") and not result["changed"]
        assert result["user"] == pwd.getpwuid(os.geteuid()).pw_name
        assert [(p["destination"], p["ok"]) for p in result["paths"]] == [("hv-a2", True)]
        assert result["msg"].startswith("hv-a1 reaches every peer's migration URI: hv-a2")


def test_a_broken_path_fails_the_task_naming_both_hosts_and_the_fix():
    uri = _closed_uri()
    peers = [{"name": "hv-a2", "uri": "test:///default"}, {"name": "hv-a3", "uri": uri}]
    code, result = run_module_main(module, {"source": "hv-a1", "peers": peers})
    assert code == 1 and result["failed"] and result["broken"] == ["hv-a3"]
    assert "hv-a1 -> hv-a3 (%s" % uri in result["msg"] and "fix: nothing answers" in result["msg"]
    assert [p["ok"] for p in result["paths"]] == [True, False]


def test_peers_are_required_and_checked_by_the_spec():
    code, result = run_module_main(module, {"peers": [{"name": "hv-a2"}]})
    assert code == 1 and "uri" in result["msg"]
