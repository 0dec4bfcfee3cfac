"""Stop policy of the drain (issue 10, case 14): only guests the operator allowed to stop are
ever shut down, even when a guest became unmovable after the plan was made.

The facts gatherer is replaced by a fixed facts document (what libvirt_facts returns); the
shutdown itself is exercised on the lab (tests/lab/test_migrate_drain.py).
"""
from ansible_collections.virtfleet.cluster.plugins.module_utils import drain
from ansible_collections.virtfleet.cluster.plugins.module_utils.drain_options import ClusterHost, DrainOptions

from .test_drain import _ClosingConnection


def facts(*guests):
    return {"memory_total_mib": 8192, "memory_free_mib": 6000, "cpus": 4, "guests": [
        {"name": name, "active": True, "state": "running", "memory_mib": 256, "max_memory_mib": 256, "vcpus": 1,
         "movable": not blocked, "migration_blockers": ["host device passthrough"] if blocked else [],
         "local_disks": [], "migration_notes": []}
        for name, blocked in guests]}


def gathered(monkeypatch, options, *guests):
    monkeypatch.setattr(drain.libvirt_facts, "gather_hypervisor_facts", lambda *a, **k: facts(*guests))
    return drain.gather_host(None, ClusterHost("hv-1", "test:///hv-1"), options)[1]


def test_shutdown_applies_only_to_guests_the_operator_allowed(monkeypatch):
    options = DrainOptions(unmovable="shutdown", stop_allowed_guests=["db-allowed"])
    guests = {g.name: g for g in gathered(monkeypatch, options, ("db-allowed", True), ("became-unmovable", True))}
    assert guests["db-allowed"].unmovable_policy == "shutdown"
    assert guests["became-unmovable"].unmovable_policy == "fail"


def test_without_an_allowed_list_the_drain_option_decides_as_before(monkeypatch):
    options = DrainOptions(unmovable="shutdown")
    guest = gathered(monkeypatch, options, ("any", True))[0]
    assert guest.unmovable_policy is None  # the planner's policy: shutdown


def test_allowed_list_never_turns_leave_or_fail_into_shutdown(monkeypatch):
    for policy in ("leave", "fail"):
        options = DrainOptions(unmovable=policy, stop_allowed_guests=["db-allowed"])
        guest = gathered(monkeypatch, options, ("db-allowed", True))[0]
        assert guest.unmovable_policy is None


def test_drain_refuses_before_anything_moves_or_stops_when_an_unallowed_guest_cannot_move(monkeypatch):
    by_uri = {"test:///hv-1": facts(("db-allowed", True), ("became-unmovable", True), ("web", False)),
              "test:///hv-2": facts()}
    monkeypatch.setattr(drain.libvirt_facts, "gather_hypervisor_facts", lambda uri, *a, **k: by_uri[uri])
    moved = []
    options = DrainOptions(unmovable="shutdown", stop_allowed_guests=["db-allowed"], cpu_check=False)
    hosts = [ClusterHost("hv-1", "test:///hv-1"), ClusterHost("hv-2", "test:///hv-2")]
    try:
        drain.drain_host("hv-1", hosts, options, connect=lambda uri: _ClosingConnection(), migrate=lambda *a, **k: moved.append(a))
    except drain.DrainError as exc:
        assert "became-unmovable" in exc.message and "nothing was moved" in exc.message
        assert exc.result["shutdown"] == [] and moved == []
    else:
        raise AssertionError("the drain went on with a guest that may not be stopped")


# --- the destination's mark and the cluster lock, asked before each move (issue 10, case 1b) ---
def _state(marks=(), token="t-run"):
    return {"lock": {"holder": {"run_id": "run-1", "token": token}},
            "marks": {h: {"owner": {"run_id": "operator"}, "reason": "RAM swap"} for h in marks}}


def test_a_destination_marked_since_the_plan_is_refused_naming_the_mark():
    why = drain.move_refusal({"guest": "g1", "source": "hv-1", "destination": "hv-2"}, _state(marks=["hv-2"]), "t-run")
    assert why.startswith("hv-2 was marked in maintenance since the plan") and "RAM swap" in why


def test_a_lock_no_longer_held_by_the_run_refuses_every_move():
    move = {"guest": "g1", "source": "hv-1", "destination": "hv-2"}
    assert "no longer holds the lock" in drain.move_refusal(move, _state(token="t-other"), "t-run")
    assert "no longer holds the lock" in drain.move_refusal(move, {"lock": None, "marks": {}}, "t-run")
    assert drain.move_refusal(move, _state(marks=["hv-1"]), "t-run") is None  # the source's own mark is expected


def test_the_drain_asks_before_each_move_and_stops_at_a_refusal(monkeypatch):
    by_uri = {"test:///hv-1": facts(("g1", False), ("g2", False)), "test:///hv-2": facts(), "test:///hv-3": facts()}
    monkeypatch.setattr(drain.libvirt_facts, "gather_hypervisor_facts", lambda uri, *a, **k: by_uri[uri])
    asked, moved = [], []

    def gate(move):
        asked.append(move["guest"])
        if len(asked) > 1:
            return "hv-9 was marked in maintenance since the plan"
        return None

    hosts = [ClusterHost("hv-1", "test:///hv-1"), ClusterHost("hv-2", "test:///hv-2"), ClusterHost("hv-3", "test:///hv-3")]
    options = DrainOptions(cpu_check=False, max_parallel=1)
    try:
        drain.drain_host("hv-1", hosts, options, connect=lambda uri: _ClosingConnection(), gate=gate,
                         migrate=lambda guest, *a, **k: moved.append(guest) or {"downtime_ms": 1})
    except drain.DrainError as exc:
        assert "marked in maintenance since the plan" in exc.message
        assert exc.result["where"] == {"g1": exc.result["migrations"][0]["destination"], "g2": "hv-1"}
    else:
        raise AssertionError("the drain went on after the gate refused a move")
    assert len(asked) == 2 and len(moved) == 1
