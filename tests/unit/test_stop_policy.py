"""Stop policy of the drain (issue 10, case 14): only guests the operator allowed to stop are
ever shut down, even when a guest became unmovable after the plan was made.

The facts gatherer is replaced by a fixed facts document (what libvirt_facts returns); the
shutdown itself is exercised on the lab (tests/lab/test_migrate_drain.py).
"""
from ansible_collections.virtfleet.cluster.plugins.module_utils import drain as d


def facts(*guests):
    return {"memory_total_mib": 8192, "memory_free_mib": 6000, "cpus": 4, "guests": [
        {"name": name, "active": True, "state": "running", "memory_mib": 256, "max_memory_mib": 256, "vcpus": 1,
         "movable": not blocked, "migration_blockers": ["host device passthrough"] if blocked else [],
         "local_disks": [], "migration_notes": []}
        for name, blocked in guests]}


def gathered(monkeypatch, options, *guests):
    monkeypatch.setattr(d.libvirt_facts, "gather_hypervisor_facts", lambda *a, **k: facts(*guests))
    return d.gather_host(None, d.ClusterHost("hv-1", "test:///hv-1"), options)[1]


def test_shutdown_applies_only_to_guests_the_operator_allowed(monkeypatch):
    options = d.DrainOptions(unmovable="shutdown", stop_allowed_guests=["db-allowed"])
    guests = {g.name: g for g in gathered(monkeypatch, options, ("db-allowed", True), ("became-unmovable", True))}
    assert guests["db-allowed"].unmovable_policy == "shutdown"
    assert guests["became-unmovable"].unmovable_policy == "fail"


def test_without_an_allowed_list_the_drain_option_decides_as_before(monkeypatch):
    options = d.DrainOptions(unmovable="shutdown")
    guest = gathered(monkeypatch, options, ("any", True))[0]
    assert guest.unmovable_policy is None  # the planner's policy: shutdown


def test_allowed_list_never_turns_leave_or_fail_into_shutdown(monkeypatch):
    for policy in ("leave", "fail"):
        options = d.DrainOptions(unmovable=policy, stop_allowed_guests=["db-allowed"])
        guest = gathered(monkeypatch, options, ("db-allowed", True))[0]
        assert guest.unmovable_policy is None


class _Conn:
    def close(self):
        pass


def test_drain_refuses_before_anything_moves_or_stops_when_an_unallowed_guest_cannot_move(monkeypatch):
    by_uri = {"test:///hv-1": facts(("db-allowed", True), ("became-unmovable", True), ("web", False)),
              "test:///hv-2": facts()}
    monkeypatch.setattr(d.libvirt_facts, "gather_hypervisor_facts", lambda uri, *a, **k: by_uri[uri])
    moved = []
    options = d.DrainOptions(unmovable="shutdown", stop_allowed_guests=["db-allowed"], cpu_check=False)
    hosts = [d.ClusterHost("hv-1", "test:///hv-1"), d.ClusterHost("hv-2", "test:///hv-2")]
    try:
        d.drain_host("hv-1", hosts, options, connect=lambda uri: _Conn(), migrate=lambda *a, **k: moved.append(a))
    except d.DrainError as exc:
        assert "became-unmovable" in exc.message and "nothing was moved" in exc.message
        assert exc.result["shutdown"] == [] and moved == []
    else:
        raise AssertionError("the drain went on with a guest that may not be stopped")
