"""One migration-options spec (migration_options.MIGRATION_OPTIONS_SPEC): Ansible validates
host_drain's `migration` with it before any code runs, the doc fragment and host_drain's
suboptions document it, and URIs are shown with their secrets masked (no whole-URI no_log)."""
import pytest
import yaml

from ansible_collections.virtfleet.cluster.plugins.doc_fragments.migration_options import ModuleDocFragment
from ansible_collections.virtfleet.cluster.plugins.module_utils import drain
from ansible_collections.virtfleet.cluster.plugins.module_utils import migration
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_options import MIGRATION_OPTIONS_SPEC
from ansible_collections.virtfleet.cluster.plugins.modules import guest_migrate, host_drain

from module_main import run_module_main

HOSTS = [{"name": "hv-1", "uri": "qemu+tcp://192.0.2.1/system"}, {"name": "hv-2", "uri": "qemu+tcp://192.0.2.2/system"}]
SECRET_URI = "qemu+tcp://admin:s3cr3t-pw@hv-1/system?apikey=k3y-s3cr3t"


@pytest.fixture
def drain_never_runs(monkeypatch):
    """drain_host replaced: records a call, so a test sees whether any drain code ran."""
    calls = []
    monkeypatch.setattr(drain, "drain_host", lambda *args, **kwargs: calls.append(args) or {})
    return calls


@pytest.mark.parametrize("migration_options, words", [
    ({"max_downtime_msx": 300}, "max_downtime_msx"),
    ({"bandwidth_mib": "fast"}, "bandwidth_mib"),
    ({"auto_converge": "perhaps"}, "auto_converge"),
    ({"poll_interval": 0.1}, "poll_interval"),  # internal, not an option of a task
])
def test_a_typo_or_wrong_type_in_host_drain_migration_is_refused_by_ansible(drain_never_runs, migration_options, words):
    code, result = run_module_main(host_drain, {"host": "hv-1", "hosts": HOSTS, "migration": migration_options})
    assert code == 1 and result["failed"] is True
    assert words in result["msg"] and "migration" in result["msg"]
    assert drain_never_runs == []  # refused by the argument spec, before the drain's code


def test_host_drain_migration_values_are_converted_and_defaults_filled(monkeypatch):
    seen = {}

    def drain_host(host, hosts, options, **_kwargs):
        seen["options"] = options
        return {"plan": {"moves": []}, "migrations": [], "left": [], "shutdown": [], "elapsed_s": 0.0}
    monkeypatch.setattr(drain, "drain_host", drain_host)
    code, result = run_module_main(host_drain, {"host": "hv-1", "hosts": HOSTS, "migration": {"bandwidth_mib": "100"}})
    assert code == 0, result
    assert seen["options"].migration.bandwidth_mib == 100
    assert seen["options"].migration.stall_iterations == MIGRATION_OPTIONS_SPEC["stall_iterations"]["default"]


def test_value_checks_ansible_cannot_express_still_refuse(drain_never_runs):
    code, result = run_module_main(host_drain, {"host": "hv-1", "hosts": HOSTS,
                                                "migration": {"auto_converge_initial": 20}})
    assert code == 1 and result["msg"] == "invalid migration options: auto_converge_initial needs auto_converge"
    assert drain_never_runs == []


def _documented(options):
    return {name: (doc["type"], doc.get("default"), doc.get("elements")) for name, doc in options.items()}


def _specified(spec):
    return {name: (item["type"], item.get("default"), item.get("elements")) for name, item in spec.items()}


def test_the_fragment_and_host_drain_document_exactly_the_spec():
    fragment = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    assert _documented(fragment) == _specified(MIGRATION_OPTIONS_SPEC)
    suboptions = yaml.safe_load(host_drain.DOCUMENTATION)["options"]["migration"]["suboptions"]
    assert _documented(suboptions) == _specified(MIGRATION_OPTIONS_SPEC)
    assert "virtfleet.cluster.migration_options" in yaml.safe_load(guest_migrate.DOCUMENTATION)["extends_documentation_fragment"]
    assert all(guest_migrate.ARGUMENT_SPEC[name] == spec for name, spec in MIGRATION_OPTIONS_SPEC.items())
    assert host_drain.ARGUMENT_SPEC["migration"]["options"] is MIGRATION_OPTIONS_SPEC


def test_no_uri_is_no_log_any_more():
    hosts = host_drain.ARGUMENT_SPEC["hosts"]["options"]
    for spec in (guest_migrate.ARGUMENT_SPEC["source_uri"], guest_migrate.ARGUMENT_SPEC["dest_uri"],
                 guest_migrate.ARGUMENT_SPEC["dest_migration_uri"], hosts["uri"], hosts["migration_uri"]):
        assert not spec.get("no_log")


def test_guest_migrate_shows_uris_with_their_secrets_masked(monkeypatch):
    pytest.importorskip("libvirt")  # run_module checks libvirt-python first
    monkeypatch.setattr(migration, "locate_guest", lambda guest, uris, connect=None: {
        "hv-1": "unreachable: cannot connect to %s" % uris["hv-1"], "hv-2": "absent"})
    code, result = run_module_main(guest_migrate, {"guest": "g1", "source_uri": SECRET_URI, "source_name": "hv-1",
                                                   "dest_uri": "qemu+tcp://hv-2/system", "dest_name": "hv-2"},
                                   check_mode=True)
    assert code == 1 and "cannot check" in result["msg"]
    text = repr(result)
    assert "s3cr3t-pw" not in text and "k3y-s3cr3t" not in text
    assert "hv-1/system" in result["msg"]  # the URI itself stays readable


def test_host_drain_shows_uris_with_their_secrets_masked(monkeypatch):
    pytest.importorskip("libvirt")

    def drain_host(host, hosts, options, **_kwargs):
        raise drain.DrainError("cannot read host hv-1 to drain it: %s refused" % hosts[0]["uri"],
                               {"unreachable": {"hv-1": hosts[0]["uri"]}})
    monkeypatch.setattr(drain, "drain_host", drain_host)
    hosts = [{"name": "hv-1", "uri": SECRET_URI}, HOSTS[1]]
    code, result = run_module_main(host_drain, {"host": "hv-1", "hosts": hosts})
    assert code == 1
    text = repr(result)
    assert "s3cr3t-pw" not in text and "k3y-s3cr3t" not in text
    assert "hv-1/system" in result["msg"] and "hv-1/system" in result["unreachable"]["hv-1"]
