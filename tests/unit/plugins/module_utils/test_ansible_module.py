"""The one module shape (plugins/module_utils/ansible_module.py): errors, warnings, masking."""
import types

from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError

from module_main import run_module_main

SPEC = {"uri": {"type": "str", "default": "qemu:///system"},
        "hosts": {"type": "list", "elements": "dict", "default": []}}


def _texts(warnings):
    """Warning texts; ansible-core 2.19 returns each as a WarningSummary (its event's msg)."""
    return [w if isinstance(w, str) else w["event"]["msg"] for w in warnings]


def _module(work):
    return types.SimpleNamespace(__name__="fake_module", main=lambda: run_module(SPEC, work, needs_libvirt=False))


def test_an_error_becomes_a_failure_with_the_fields_it_carries():
    def work(_params, _check_mode):
        raise VirtfleetError("hv-1 could not be drained: g1 is paused on hv-1", {"where": {"g1": "hv-1 (paused)"}})
    code, result = run_module_main(_module(work), {})
    assert code == 1 and result["failed"] is True
    assert result["msg"] == "hv-1 could not be drained: g1 is paused on hv-1"
    assert result["where"] == {"g1": "hv-1 (paused)"}


def test_warnings_are_task_warnings_and_a_failed_result_fails():
    def work(params, check_mode):
        return {"changed": not check_mode, "warnings": ["autostart not carried over"], "uri": params["uri"]}
    code, result = run_module_main(_module(work), {}, check_mode=True)
    assert code == 0 and result["changed"] is False and result["uri"] == "qemu:///system"
    assert _texts(result["warnings"]) == ["autostart not carried over"]
    code, result = run_module_main(_module(lambda _p, _c: {"failed": True, "msg": "refused"}), {})
    assert code == 1 and result["msg"] == "refused"


def test_secrets_of_every_uri_are_masked_the_uris_stay_readable():
    def work(params, _check_mode):
        return {"shown": [params["uri"], params["hosts"][0]["uri"]]}
    args = {"uri": "qemu+ssh://root:hunter2@hv1/system",
            "hosts": [{"name": "hv2", "uri": "qemu+tls://hv2/system?pkipath=/p&secretkey=s3cr3t"}]}
    _code, result = run_module_main(_module(work), args)
    text = repr(result)
    assert "hunter2" not in text and "s3cr3t" not in text
    assert "hv1/system" in result["shown"][0] and "hv2/system" in result["shown"][1]
