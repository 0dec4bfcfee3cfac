"""Orchestration logic of drain.py: concurrency limits, order, stop on first failure, the
refusal before anything moves. The migrate function is injected: these tests check the
scheduling only, libvirt itself is exercised by tests/lab/test_migrate_drain.py."""
import threading
import time

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import drain
from ansible_collections.virtfleet.cluster.plugins.module_utils.drain_options import ClusterHost, DrainOptions
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_recovery import MigrationError
from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import (
    Guest, HostCapacity)


def moves(*specs):
    return [{"guest": g, "source": "hv-1", "destination": dst} for g, dst in specs]


class Recorder:
    """Injected migrate function: sleeps a little, records concurrency, fails on request."""

    def __init__(self, fail=(), duration=0.05, durations=None):
        self.fail = set(fail)
        self.duration = duration
        self.durations = durations or {}
        self.lock = threading.Lock()
        self.running = {}
        self.peak = 0
        self.peak_per_destination = {}
        self.started = []

    def __call__(self, move):
        with self.lock:
            self.started.append(move["guest"])
            self.running[move["guest"]] = move["destination"]
            self.peak = max(self.peak, len(self.running))
            per_dest = list(self.running.values()).count(move["destination"])
            self.peak_per_destination[move["destination"]] = max(
                per_dest, self.peak_per_destination.get(move["destination"], 0))
        time.sleep(self.durations.get(move["guest"], self.duration))
        with self.lock:
            del self.running[move["guest"]]
        if move["guest"] in self.fail:
            raise MigrationError("%s still running on hv-1: migration to %s aborted"
                                 % (move["guest"], move["destination"]), guest=move["guest"],
                                 reason="stalled", location="source", running_on="hv-1")
        return {"guest": move["guest"], "downtime_ms": 20}


def test_runs_at_most_max_parallel_at_once():
    plan = moves(*[("g%d" % i, "hv-%d" % (2 + i % 3)) for i in range(9)])
    rec = Recorder()
    outcomes = drain.run_moves(plan, rec, max_parallel=2, max_incoming_per_destination=2)
    assert rec.peak == 2
    assert [o["status"] for o in outcomes] == ["migrated"] * 9
    assert [o["running_on"] for o in outcomes] == [m["destination"] for m in plan]


def test_incoming_limit_per_destination_is_respected_and_order_kept_otherwise():
    plan = moves(("big", "hv-2"), ("mid", "hv-2"), ("small", "hv-3"), ("tiny", "hv-2"))
    rec = Recorder()
    outcomes = drain.run_moves(plan, rec, max_parallel=3, max_incoming_per_destination=1)
    assert rec.peak_per_destination == {"hv-2": 1, "hv-3": 1}
    # "mid" waits for hv-2; "small" (another destination) goes ahead of it.
    assert rec.started[:2] == ["big", "small"]
    assert [o["guest"] for o in outcomes] == ["big", "mid", "small", "tiny"]  # report in plan order


def test_sequential_when_max_parallel_is_one_keeps_plan_order():
    plan = moves(("a", "hv-2"), ("b", "hv-3"), ("c", "hv-2"))
    rec = Recorder(duration=0.01)
    outcomes = drain.run_moves(plan, rec, max_parallel=1)
    assert rec.started == ["a", "b", "c"]
    assert [o["start_index"] for o in outcomes] == [0, 1, 2]


def test_first_failure_stops_new_starts_running_ones_finish_and_locations_are_reported():
    plan = moves(("a", "hv-2"), ("b", "hv-3"), ("c", "hv-2"), ("d", "hv-3"))
    rec = Recorder(fail={"a"}, durations={"a": 0.02, "b": 0.3})
    outcomes = drain.run_moves(plan, rec, max_parallel=2, max_incoming_per_destination=1)
    by_guest = {o["guest"]: o for o in outcomes}
    assert by_guest["a"]["status"] == "failed"
    assert by_guest["a"]["running_on"] == "hv-1" and "aborted" in by_guest["a"]["error"]
    assert by_guest["b"]["status"] == "migrated"  # was running when "a" failed: finished
    assert by_guest["c"]["status"] == "not_started" and by_guest["c"]["running_on"] == "hv-1"
    assert by_guest["d"]["status"] == "not_started"
    assert rec.started == ["a", "b"]


def test_an_unexpected_exception_is_a_failure_with_unknown_location():
    def explode(move):
        raise RuntimeError("boom")
    outcome = drain.run_moves(moves(("a", "hv-2")), explode)[0]
    assert outcome["status"] == "failed" and outcome["location"] == "unknown"
    assert "boom" in outcome["error"]


def test_no_moves_nothing_runs():
    assert drain.run_moves([], Recorder()) == []


def test_progress_callbacks_are_serialized():
    seen, inside = [], []

    def progress(sample):
        inside.append(1)
        assert len(inside) == 1
        time.sleep(0.001)
        seen.append(sample)
        inside.pop()
    call = drain._serialized(progress)
    threads = [threading.Thread(target=lambda: [call(i) for i in range(50)]) for _thread in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 200


# --- planning through the shared placement planner ------------------------------------

def view(hosts, guests, source="hv-1"):
    by_name = {h.name: ClusterHost(h.name, "qemu+tcp://%s/session" % h.name, h.in_maintenance)
               for h in hosts}
    return drain.ClusterView(source, by_name, hosts, guests, {}, None, {})


HOSTS = [HostCapacity("hv-1", 4096, 4), HostCapacity("hv-2", 4096, 4),
         HostCapacity("hv-3", 4096, 4)]


def test_plan_orders_largest_first_and_numbers_the_moves():
    guests = [Guest("small", 256, 1, "hv-1"), Guest("big", 1024, 1, "hv-1"),
              Guest("other", 512, 1, "hv-2")]
    plan = drain.plan_host_drain(view(HOSTS, guests), DrainOptions())
    assert plan["ok"]
    assert [(m["order"], m["guest"]) for m in plan["moves"]] == [(1, "big"), (2, "small")]
    assert all(m["destination"] != "hv-1" for m in plan["moves"])


def test_plan_is_deterministic():
    guests = [Guest("g%d" % i, 128 * (1 + i % 3), 1, "hv-1") for i in range(6)]
    plans = [drain.plan_host_drain(view(HOSTS, guests), DrainOptions()) for _run in range(3)]
    assert plans[0] == plans[1] == plans[2]


def test_hosts_in_maintenance_excluded_and_refusal_names_guests_and_shortfall():
    hosts = [HostCapacity("hv-1", 4096, 4), HostCapacity("hv-2", 4096, 4, in_maintenance=True),
             HostCapacity("hv-3", 4096, 4, in_maintenance=True)]
    guests = [Guest("web-1", 1024, 1, "hv-1"), Guest("web-2", 512, 1, "hv-1")]
    plan = drain.plan_host_drain(view(hosts, guests), DrainOptions())
    assert not plan["ok"]
    assert plan["excluded_in_maintenance"] == ["hv-2", "hv-3"]
    message = drain.refusal_message("hv-1", plan)
    assert message.startswith("refusing to drain hv-1, nothing was moved")
    assert "2 of its 2 guests" in message and "1536 MiB short" in message
    assert "web-1 1024 MiB" in message and "in maintenance" in message


def test_overcommit_ratio_can_make_the_cluster_too_small():
    guests = [Guest("g1", 128, 1, "hv-1"), Guest("g2", 128, 1, "hv-1")]
    options = DrainOptions(memory_overcommit=0.15)  # 4096 * 0.15 - 512 < 128
    plan = drain.plan_host_drain(view(HOSTS, guests), options)
    assert not plan["ok"] and len(plan["unplaced"]) == 2


def test_anti_affinity_and_unmovable_policies_reach_the_planner():
    options = DrainOptions(unmovable="leave")
    guests = [Guest("db", 256, 1, "hv-1", movable=False, unmovable_reason="declared unmovable")]
    plan = drain.plan_host_drain(view(HOSTS, guests), options)
    assert plan["ok"] and plan["unmovable"][0]["action"] == "leave"
    plan = drain.plan_host_drain(view(HOSTS, guests), DrainOptions())
    assert not plan["ok"]
    assert "cannot live-migrate" in drain.refusal_message("hv-1", plan)


@pytest.mark.parametrize("kwargs, words", [
    ({"max_parallel": 0}, "max_parallel"),
    ({"max_incoming_per_destination": 0}, "max_incoming"),
    ({"order": "random"}, "order"),
    ({"unmovable": "destroy"}, "unmovable"),
    ({"nonsense": 1}, "unknown drain option"),
])
def test_invalid_drain_options_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        DrainOptions(**kwargs)


def test_migration_options_accept_a_dict():
    options = DrainOptions(migration={"max_downtime_ms": 200, "guest": "ignored"})
    assert options.migration.max_downtime_ms == 200


# --- where every guest is after a failed migration (issue 10, case 15) -------------------

class PausedOnSource:
    """Injected migrate function: the migration left ``paused`` paused on hv-1 (nobody runs
    it: the driver could not prove the destination has no copy), the others migrate."""

    def __init__(self, paused="g1", location="source (paused)", paused_on="hv-1"):
        self.paused = paused
        self.location = location
        self.paused_on = paused_on

    def __call__(self, move):
        if move["guest"] == self.paused:
            raise MigrationError("%s left paused on hv-1: the destination %s could not be asked"
                                 % (move["guest"], move["destination"]), guest=move["guest"],
                                 source=move["source"], destination=move["destination"],
                                 reason="destination-unreachable", location=self.location,
                                 running_on=None, paused_on=self.paused_on)
        return {"guest": move["guest"], "downtime_ms": 20}


def test_a_guest_left_paused_is_reported_paused_and_where():
    outcome = drain.run_moves(moves(("g1", "hv-2")), PausedOnSource())[0]
    assert outcome["status"] == "failed" and outcome["running_on"] is None
    assert outcome["where"] == "hv-1 (paused)"
    assert outcome["paused_on"] == "hv-1"


def test_every_outcome_says_where_the_guest_is():
    plan = moves(("moved", "hv-2"), ("g1", "hv-3"), ("later", "hv-2"))
    outcomes = drain.run_moves(plan, PausedOnSource(), max_parallel=1)
    assert [(o["guest"], o["status"], o["where"]) for o in outcomes] == [
        ("moved", "migrated", "hv-2"), ("g1", "failed", "hv-1 (paused)"),
        ("later", "not_started", "hv-1")]
    rec = Recorder(fail={"a"})
    assert drain.run_moves(moves(("a", "hv-2")), rec)[0]["where"] == "hv-1"  # still running there

    def explode(move):
        raise RuntimeError("boom")
    assert drain.run_moves(moves(("a", "hv-2")), explode)[0]["where"] == "unknown"


def test_a_guest_active_on_both_hosts_is_reported_so():
    migrate = PausedOnSource(location="both", paused_on=None)
    outcome = drain.run_moves(moves(("g1", "hv-2")), migrate)[0]
    assert outcome["where"] == "hv-1 and hv-2 (active on both)"


def _facts(*names):
    return {"memory_total_mib": 8192, "memory_free_mib": 6000, "cpus": 4, "guests": [
        {"name": name, "active": True, "state": "running", "memory_mib": 256, "max_memory_mib": 256,
         "vcpus": 1, "movable": True, "migration_blockers": [], "local_disks": [], "migration_notes": []}
        for name in names]}


class _ClosingConnection:
    """A destination's connection: nothing arriving on it."""

    def listAllDomains(self, flags=0):
        return []

    def close(self):
        return 0


def _drain_with(monkeypatch, migrate_one, **facts_by_host):
    """drain_host over fixed facts (hv-1 to drain) with ``migrate_one(move)`` as the migration."""
    by_uri = {"test:///%s" % host: _facts(*guests) for host, guests in facts_by_host.items()}
    monkeypatch.setattr(drain.libvirt_facts, "gather_hypervisor_facts", lambda uri, *a, **k: by_uri[uri])
    hosts = [ClusterHost(host, "test:///%s" % host) for host in sorted(facts_by_host)]

    def migrate(guest, source_uri, dest_uri, options, **kwargs):
        return migrate_one({"guest": guest, "source": kwargs["source_name"],
                            "destination": kwargs["dest_name"]})
    with pytest.raises(drain.DrainError) as caught:
        drain.drain_host("hv-1", hosts, DrainOptions(cpu_check=False, max_parallel=1),
                         connect=lambda uri: _ClosingConnection(), migrate=migrate)
    return caught.value


def test_a_drain_stopped_by_a_paused_guest_names_it_paused_not_nowhere(monkeypatch):
    error = _drain_with(monkeypatch, PausedOnSource(), **{"hv-1": ["g1"], "hv-2": []})
    assert "g1 on hv-1 (paused)" in error.message
    assert "NOWHERE" not in error.message
    assert error.result["locations"] == {"g1": None}  # host running it: nobody
    assert error.result["where"] == {"g1": "hv-1 (paused)"}


def test_a_drain_stopped_by_a_guest_active_on_both_hosts_says_so(monkeypatch):
    error = _drain_with(monkeypatch, PausedOnSource(location="both", paused_on=None),
                        **{"hv-1": ["g1"], "hv-2": []})
    assert "g1 on hv-1 and hv-2 (active on both)" in error.message
    assert "NOWHERE" not in error.message


def test_the_drain_failure_says_where_every_guest_of_the_host_is(monkeypatch):
    migrate = PausedOnSource(paused="small")
    error = _drain_with(monkeypatch, migrate, **{"hv-1": ["big", "small", "tiny"], "hv-2": []})
    where = error.result["where"]
    assert where["small"] == "hv-1 (paused)"
    assert set(where.values()) <= {"hv-1", "hv-2", "hv-1 (paused)"}
    assert all("%s on %s" % item in error.message for item in where.items())


# --- the host_drain action shows what a migration could not carry over ----------------------

AUTOSTART_WARNING = "g1 runs on hv-2 without the autostart it had on hv-1: run `virsh -c URI autostart g1`"


def _run_action(monkeypatch, report=None, error=None, hosts=None):
    """The host_drain action plugin, in-process path, with drain_host replaced."""
    from unittest import mock
    from ansible_collections.virtfleet.cluster.plugins.action import host_drain as action

    def drain_host(*_args, **_kwargs):
        if error is not None:
            raise error
        return report
    monkeypatch.setattr(drain, "drain_host", drain_host)
    monkeypatch.setattr(action, "HAS_LIBVIRT", True)
    task = mock.MagicMock(async_val=0, check_mode=False, action="virtfleet.cluster.host_drain",
                          args={"host": "hv-1", "hosts": hosts or [{"name": "hv-1", "uri": "test:///hv-1"},
                                                                   {"name": "hv-2", "uri": "test:///hv-2"}]})
    connection = mock.MagicMock()
    connection._shell.tmpdir = "/nonexistent"
    plugin = action.ActionModule(task, connection, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(),
                                 mock.MagicMock())
    return plugin.run(task_vars={})


def _migrated(guest, destination, **result):
    return {"guest": guest, "source": "hv-1", "destination": destination, "status": "migrated",
            "running_on": destination, "where": destination, "result": dict(result, guest=guest)}


def test_host_drain_action_shows_migration_warnings_as_task_warnings(monkeypatch):
    report = {"host": "hv-1", "changed": True, "plan": {"moves": []}, "left": [], "shutdown": [],
              "elapsed_s": 1.0, "migrations": [_migrated("g1", "hv-2", warnings=[AUTOSTART_WARNING]),
                                               _migrated("g2", "hv-2")]}
    result = _run_action(monkeypatch, report=report)
    assert not result.get("failed"), result.get("msg")
    assert result.get("warnings") == [AUTOSTART_WARNING]


def test_host_drain_action_shows_warnings_of_the_migrations_done_before_a_failure(monkeypatch):
    failed = {"guest": "g2", "source": "hv-1", "destination": "hv-2", "status": "failed", "running_on": None,
              "where": "hv-1 (paused)", "paused_on": "hv-1", "error": "g2 left paused on hv-1"}
    report = {"host": "hv-1", "changed": True, "plan": {"moves": []}, "left": [], "shutdown": [],
              "migrations": [_migrated("g1", "hv-2", warnings=[AUTOSTART_WARNING]), failed]}
    result = _run_action(monkeypatch, error=drain.DrainError("drain of hv-1 stopped", report))
    assert result["failed"] and result["msg"] == "drain of hv-1 stopped"
    assert result.get("warnings") == [AUTOSTART_WARNING]


def test_host_drain_action_shows_uris_with_their_secrets_masked(monkeypatch):
    secret_uri = "qemu+tcp://admin:s3cr3t-pw@hv-1/system?secretkey=k3y-s3cr3t"
    error = drain.DrainError("cannot read host hv-1 to drain it: %s refused" % secret_uri, {"plan": {"moves": []}})
    result = _run_action(monkeypatch, error=error, hosts=[{"name": "hv-1", "uri": secret_uri},
                                                          {"name": "hv-2", "uri": "test:///hv-2"}])
    assert result["failed"] and "hv-1/system" in result["msg"]  # the URI stays readable
    assert "s3cr3t-pw" not in repr(result) and "k3y-s3cr3t" not in repr(result)


# --- the end of a drain against a small fake of the source host's libvirt objects (issue 17) ---
# The lab cannot make a guest stay behind after a reported success, nor show whether a guest
# that must be left alone was sent a shutdown request it ignored: these fakes can.

class _FakeDomain:
    def __init__(self, name, obeys_shutdown=True):
        self._name = name
        self.active = True
        self.obeys_shutdown = obeys_shutdown
        self.shutdown_requests = 0

    def name(self):
        return self._name

    def isActive(self):
        return self.active

    def shutdown(self):
        self.shutdown_requests += 1
        if self.obeys_shutdown:
            self.active = False


class _FakeSourceHost:
    """The source's connection: the guests it runs, as libvirt lists them."""

    def __init__(self, *domains):
        self.domains = {d.name(): d for d in domains}

    def listAllDomains(self, flags=0):
        return [d for d in self.domains.values() if d.active]

    def lookupByName(self, name):
        return self.domains[name]

    def close(self):
        return 0


def _end_of_drain(monkeypatch, source_host, guests, options, migrate, **kwargs):
    """drain_host of hv-1 (``guests``: (name, movable) pairs) to an empty hv-2."""
    by_uri = {"test:///hv-1": {"memory_total_mib": 8192, "memory_free_mib": 6000, "cpus": 4, "guests": [
        {"name": name, "active": True, "state": "running", "memory_mib": 256, "max_memory_mib": 256, "vcpus": 1,
         "movable": movable, "migration_blockers": [] if movable else ["host device passthrough"],
         "local_disks": [], "migration_notes": []} for name, movable in guests]},
        "test:///hv-2": _facts()}
    monkeypatch.setattr(drain.libvirt_facts, "gather_hypervisor_facts", lambda uri, *a, **k: by_uri[uri])
    connections = {"test:///hv-1": source_host, "test:///hv-2": _ClosingConnection()}
    hosts = [ClusterHost("hv-1", "test:///hv-1"), ClusterHost("hv-2", "test:///hv-2")]
    return drain.drain_host("hv-1", hosts, options, connect=connections.__getitem__, migrate=migrate, **kwargs)


def _migrates(source_host, stays=()):
    """A migration that reports success; the guests in ``stays`` still run on the source."""
    def migrate(guest, source_uri, dest_uri, options, **kwargs):
        if guest not in stays:
            source_host.domains[guest].active = False
        return {"guest": guest, "downtime_ms": 20}
    return migrate


def test_the_final_check_asks_the_host_not_the_migration_reports(monkeypatch):
    source = _FakeSourceHost(_FakeDomain("g1"), _FakeDomain("g2"))
    with pytest.raises(drain.DrainError) as caught:
        _end_of_drain(monkeypatch, source, [("g1", True), ("g2", True)], DrainOptions(cpu_check=False),
                      _migrates(source, stays={"g2"}))
    assert caught.value.message == "hv-1 still runs g2 after the drain: do not reboot it"
    assert caught.value.result["remaining_guests"] == ["g2"]
    assert [o["status"] for o in caught.value.result["migrations"]] == ["migrated", "migrated"]


def test_a_drain_whose_host_is_empty_reports_success(monkeypatch):
    source = _FakeSourceHost(_FakeDomain("g1"), _FakeDomain("g2"))
    result = _end_of_drain(monkeypatch, source, [("g1", True), ("g2", True)], DrainOptions(cpu_check=False),
                           _migrates(source))
    assert result["remaining_guests"] == [] and result["changed"] is True
    assert result["where"] == {"g1": "hv-2", "g2": "hv-2"} and result["shutdown"] == []


def test_a_guest_under_the_leave_policy_gets_no_shutdown_request(monkeypatch):
    pinned = _FakeDomain("pinned")
    source = _FakeSourceHost(_FakeDomain("g1"), pinned)
    result = _end_of_drain(monkeypatch, source, [("g1", True), ("pinned", False)],
                           DrainOptions(cpu_check=False, unmovable="leave"), _migrates(source))
    assert pinned.shutdown_requests == 0 and pinned.active
    assert result["left"] == ["pinned"] and result["remaining_guests"] == ["pinned"]
    assert result["shutdown"] == []


def test_a_guest_under_the_shutdown_policy_is_asked_once_and_the_host_checked(monkeypatch):
    pinned = _FakeDomain("pinned")
    source = _FakeSourceHost(_FakeDomain("g1"), pinned)
    result = _end_of_drain(monkeypatch, source, [("g1", True), ("pinned", False)],
                           DrainOptions(cpu_check=False, unmovable="shutdown", shutdown_timeout=5), _migrates(source))
    assert pinned.shutdown_requests == 1 and not pinned.active
    assert result["shutdown"] == [{"guest": "pinned", "ok": True, "error": None}]
    assert result["remaining_guests"] == [] and result["changed"] is True


def test_a_guest_that_ignores_its_shutdown_request_keeps_the_host_from_reboot(monkeypatch):
    pinned = _FakeDomain("pinned", obeys_shutdown=False)
    source = _FakeSourceHost(pinned)
    with pytest.raises(drain.DrainError) as caught:
        _end_of_drain(monkeypatch, source, [("pinned", False)],
                      DrainOptions(cpu_check=False, unmovable="shutdown", shutdown_timeout=0), _migrates(source))
    assert pinned.shutdown_requests == 1
    assert caught.value.message == ("hv-1 still runs pinned after the drain: do not reboot it (pinned: still running"
                                    " 0 s after a clean shutdown request (not forced))")


# --- what the drain reports and refuses, exactly (issue 17: survivors of `make mutation`) -------

def _ticks(*values):
    it = iter(values)
    return lambda: next(it)


def test_a_migrated_outcome_in_full_with_its_timings_in_milliseconds():
    (outcome,) = drain.run_moves(moves(("g1", "hv-2")), lambda move: {"downtime_ms": 20},
                                 clock=_ticks(10.0, 10.00012, 10.5))
    assert outcome == {"guest": "g1", "source": "hv-1", "destination": "hv-2", "start_index": 0,
                       "status": "migrated", "running_on": "hv-2", "location": "destination", "where": "hv-2",
                       "result": {"downtime_ms": 20}, "started_s": 0.0, "ended_s": 0.5}


def test_failed_and_unexpected_outcomes_in_full():
    (failed,) = drain.run_moves(moves(("g1", "hv-2")), PausedOnSource(), clock=_ticks(0.0, 1.0, 2.0))
    assert failed == {"guest": "g1", "source": "hv-1", "destination": "hv-2", "start_index": 0, "status": "failed",
                      "running_on": None, "location": "source (paused)", "where": "hv-1 (paused)", "paused_on": "hv-1",
                      "error": "g1 left paused on hv-1: the destination hv-2 could not be asked",
                      "reason": "destination-unreachable", "started_s": 1.0, "ended_s": 2.0}

    def explode(move):
        raise RuntimeError("boom")
    (unexpected,) = drain.run_moves(moves(("g1", "hv-2")), explode, clock=_ticks(0.0, 1.0, 2.0))
    assert unexpected == {"guest": "g1", "source": "hv-1", "destination": "hv-2", "start_index": 0,
                          "status": "failed", "running_on": None, "location": "unknown", "where": "unknown",
                          "paused_on": None, "error": "g1: unexpected error: RuntimeError('boom')",
                          "reason": "unexpected", "started_s": 1.0, "ended_s": 2.0}


def test_two_incoming_per_destination_means_two_not_more():
    rec = Recorder(duration=0.1)
    drain.run_moves(moves(("a", "hv-2"), ("b", "hv-2"), ("c", "hv-2"), ("d", "hv-3")), rec, max_parallel=4,
                    max_incoming_per_destination=2)
    assert rec.peak_per_destination == {"hv-2": 2, "hv-3": 1}


def test_move_refusals_name_the_lock_holder_and_the_mark():
    move = {"guest": "g1", "source": "hv-1", "destination": "hv-2"}
    assert drain.move_refusal(move, _lock_state(holder={"run_id": "run-2", "token": "t-2"}), "t-run") == (
        "this run no longer holds the lock of the cluster (held by run run-2): no further guest moves")
    assert drain.move_refusal(move, _lock_state(holder={"token": "t-2"}), "t-run") == (
        "this run no longer holds the lock of the cluster (held by run ?): no further guest moves")
    assert drain.move_refusal(move, None, "t-run") == (
        "this run no longer holds the lock of the cluster (nobody holds it): no further guest moves")
    assert drain.move_refusal(move, _lock_state(marks={"hv-2": {"phase": "marked"}}), "t-run") == (
        "hv-2 was marked in maintenance since the plan (by ?: no reason given)")
    assert drain.move_refusal(move, _lock_state(marks={"hv-2": {"owner": {"run_id": "op"}, "reason": "RAM"}}),
                              "t-run") == "hv-2 was marked in maintenance since the plan (by op: RAM)"
    # A run that shares the cluster's lock holds it while it is registered in runs.
    shared = {"lock": None, "runs": {"t-run": {"holder": {"run_id": "run-1"}}, "t-2": {"holder": {"run_id": "run-2"}}}}
    assert drain.move_refusal(move, shared, "t-run") is None
    assert drain.move_refusal(move, dict(shared, runs={"t-2": {"holder": {"run_id": "run-2"}}}), "t-run") == (
        "this run no longer holds the lock of the cluster (held by run run-2): no further guest moves")


def _lock_state(holder=None, marks=None):
    return {"lock": {"holder": holder or {"run_id": "run-1", "token": "t-run"}}, "marks": marks or {}}


def test_the_drain_plan_carries_its_limits_unreachable_and_excluded_hosts():
    view = drain.ClusterView(
        "hv-1", {}, [HostCapacity("hv-1", 8192, 4, in_maintenance=True), HostCapacity("hv-2", 8192, 4),
                     HostCapacity("hv-3", 8192, 4, in_maintenance=True)],
        [Guest("g1", 512, 1, host="hv-1")], {"hv-4": "connection refused"}, None, {})
    plan = drain.plan_host_drain(view, DrainOptions(cpu_check=False, max_parallel=3, max_incoming_per_destination=2))
    assert plan["moves"] == [{"guest": "g1", "source": "hv-1", "destination": "hv-2", "memory_mib": 512, "vcpus": 1,
                              "order": 1}]
    assert (plan["max_parallel"], plan["max_incoming_per_destination"]) == (3, 2)
    assert plan["unreachable_hosts"] == {"hv-4": "connection refused"}
    assert plan["excluded_in_maintenance"] == ["hv-3"]


def test_the_drain_plan_asks_the_views_cpu_check():
    view = drain.ClusterView("hv-1", {}, [HostCapacity("hv-1", 8192, 4), HostCapacity("hv-2", 8192, 4)],
                             [Guest("g1", 512, 1, host="hv-1")], {}, lambda guest, host: "too old", {})
    plan = drain.plan_host_drain(view, DrainOptions())
    assert plan["unplaced"][0]["per_host"] == {"hv-2": "CPU cannot run the guest: too old"}


def test_the_refusal_lists_the_unreachable_hosts_left_out():
    plan = {"moves": [], "unplaced": [{"guest": "g1", "memory_mib": 512}], "problems": [],
            "unreachable_hosts": {"hv-4": "refused", "hv-3": "timeout"}}
    assert drain.refusal_message("hv-1", plan) == (
        "refusing to drain hv-1, nothing was moved: the cluster cannot absorb 1 of its 1 guests (512 MiB short: g1"
        " 512 MiB). Unreachable hosts left out: hv-3 (timeout), hv-4 (refused)")


def test_a_source_not_among_the_hosts_is_refused_naming_them():
    with pytest.raises(drain.DrainError) as caught:
        drain.gather_cluster("hv-9", [ClusterHost("hv-2", "test:///2"), ClusterHost("hv-1", "test:///1")],
                             DrainOptions())
    assert caught.value.message == "host hv-9 is not among the cluster hosts given (hv-1, hv-2)"


def test_a_host_whose_facts_cannot_be_used_counts_as_unreachable(monkeypatch):
    by_uri = {"test:///hv-1": _facts("g1"), "test:///hv-2": {"memory_total_mib": 4096, "cpus": 2, "guests": "junk"}}
    monkeypatch.setattr(drain.libvirt_facts, "gather_hypervisor_facts", lambda uri, *a, **k: by_uri[uri])
    view = drain.gather_cluster("hv-1", [ClusterHost("hv-1", "test:///hv-1"), ClusterHost("hv-2", "test:///hv-2")],
                                DrainOptions(), connect=lambda uri: _ClosingConnection())
    try:
        assert list(view.unreachable) == ["hv-2"]
        assert view.unreachable["hv-2"].startswith("the guests of a host's facts must be a list of guest dicts")
        assert isinstance(view.cpu_check, drain.CpuChecker) and list(view.connections) == ["hv-1"]
    finally:
        view.close()
    view = drain.gather_cluster("hv-1", [ClusterHost("hv-1", "test:///hv-1")], DrainOptions(cpu_check=False),
                                connect=lambda uri: _ClosingConnection())
    assert view.cpu_check is None


def test_the_cpu_check_asks_each_destination_once_per_cpu_model(monkeypatch):
    asked = []

    class Oracle:
        def __init__(self, connections):
            self.connections = connections

        def compare(self, host, xml, arch, virttype):
            asked.append((host, xml, arch, virttype))
            return None if host == "hv-2" else "host CPU lacks avx512"
    monkeypatch.setattr(drain.libvirt_facts, "LibvirtCpuOracle", Oracle)
    check = drain.CpuChecker({"hv-2": "conn-2"})
    assert check.oracle.connections == {"hv-2": "conn-2"}
    custom = Guest("g1", 512, 1, cpu={"xml": "<cpu mode='custom'/>", "arch": "x86_64", "virttype": "kvm"})
    assert check(custom, HostCapacity("hv-2", 4096, 2)) is None
    assert check(custom, HostCapacity("hv-3", 4096, 2)) == "host CPU lacks avx512"
    assert check(custom, HostCapacity("hv-3", 4096, 2)) == "host CPU lacks avx512"
    assert asked == [("hv-2", "<cpu mode='custom'/>", "x86_64", "kvm"), ("hv-3", "<cpu mode='custom'/>", "x86_64", "kvm")]
    assert check(Guest("g2", 512, 1, cpu={"xml": None}), HostCapacity("hv-3", 4096, 2)) is None
    assert check(Guest("g3", 512, 1), HostCapacity("hv-3", 4096, 2)) is None
    assert len(asked) == 2


def test_each_move_is_handed_to_the_migration_with_its_hosts_uris_options_and_progress(monkeypatch):
    source = _FakeSourceHost(_FakeDomain("g1"))
    calls = []

    def migrate(guest, source_uri, dest_uri, options, **kwargs):
        calls.append((guest, source_uri, dest_uri, options, kwargs))
        source.domains[guest].active = False
        return {"downtime_ms": 20}
    options = DrainOptions(cpu_check=False, max_parallel=1)
    by_uri = {"test:///hv-1": _facts("g1"), "test:///hv-2": _facts()}
    monkeypatch.setattr(drain.libvirt_facts, "gather_hypervisor_facts", lambda uri, *a, **k: by_uri[uri])
    hosts = [ClusterHost("hv-1", "test:///hv-1"), ClusterHost("hv-2", "test:///hv-2", migration_uri="tcp://10.0.0.2")]
    connections = {"test:///hv-1": source, "test:///hv-2": _ClosingConnection()}
    seen = []
    result = drain.drain_host("hv-1", hosts, options, progress=seen.append, connect=connections.__getitem__,
                              migrate=migrate)
    ((guest, source_uri, dest_uri, passed_options, kwargs),) = calls
    assert (guest, source_uri, dest_uri, passed_options) == ("g1", "test:///hv-1", "test:///hv-2", options.migration)
    assert kwargs["source_name"] == "hv-1" and kwargs["dest_name"] == "hv-2"
    assert kwargs["dest_peer_uri"] == "tcp://10.0.0.2"
    kwargs["progress"]("a sample")
    assert seen == ["a sample"]
    assert (result["host"], result["changed"], result["check_mode"], result["left"]) == ("hv-1", True, False, [])
    assert result["locations"] == {"g1": "hv-2"} and result["where"] == {"g1": "hv-2"}
    assert result["elapsed_s"] >= 0


def test_a_gate_refusal_is_a_failure_of_that_guest_still_on_its_source(monkeypatch):
    source = _FakeSourceHost(_FakeDomain("g1"))
    by_uri = {"test:///hv-1": _facts("g1"), "test:///hv-2": _facts()}
    monkeypatch.setattr(drain.libvirt_facts, "gather_hypervisor_facts", lambda uri, *a, **k: by_uri[uri])
    connections = {"test:///hv-1": source, "test:///hv-2": _ClosingConnection()}
    with pytest.raises(drain.DrainError) as caught:
        drain.drain_host("hv-1", [ClusterHost("hv-1", "test:///hv-1"), ClusterHost("hv-2", "test:///hv-2")],
                         DrainOptions(cpu_check=False), connect=connections.__getitem__, gate=lambda move: "lock lost",
                         migrate=_migrates(source))
    (outcome,) = caught.value.result["migrations"]
    assert {key: outcome[key] for key in ("status", "running_on", "location", "where", "reason", "error")} == {
        "status": "failed", "running_on": "hv-1", "location": "source", "where": "hv-1", "reason": "refused-before-start",
        "error": "g1 not moved, still running on hv-1: lock lost"}
    assert caught.value.result["locations"] == {"g1": "hv-1"}


# --- check mode, the report's fields, the final steps (issue 17: survivors of `make mutation`) -----

def _never_migrates(*args, **kwargs):
    raise AssertionError("check mode must not migrate")


@pytest.mark.parametrize("guests, unmovable, would_migrate, would_shutdown, left, changed", [
    ([("g1", True), ("pinned", False)], "shutdown", 1, ["pinned"], [], True),
    ([("g1", True)], "shutdown", 1, [], [], True),
    ([("pinned", False)], "shutdown", 0, ["pinned"], [], True),
    ([("g1", True), ("pinned", False)], "leave", 1, [], ["pinned"], True),
    ([("pinned", False)], "leave", 0, [], ["pinned"], False),
    ([], "fail", 0, [], [], False),
])
def test_check_mode_reports_what_a_real_run_would_change_and_touches_nothing(
        monkeypatch, guests, unmovable, would_migrate, would_shutdown, left, changed):
    domains = [_FakeDomain(name) for name, _movable in guests]
    result = _end_of_drain(monkeypatch, _FakeSourceHost(*domains), guests,
                           DrainOptions(cpu_check=False, unmovable=unmovable), _never_migrates, check_mode=True)
    plan = result.pop("plan")
    assert result == {"host": "hv-1", "changed": changed, "check_mode": True, "migrations": [], "shutdown": [],
                      "left": left, "would_migrate": would_migrate, "would_shutdown": would_shutdown}
    assert [m["guest"] for m in plan["moves"]] == (["g1"] if would_migrate else [])
    assert all(d.active and d.shutdown_requests == 0 for d in domains)


def test_a_refused_drain_says_where_the_guests_of_the_host_are(monkeypatch):
    by_uri = {"test:///hv-1": _facts("g1", "g2"), "test:///hv-2": dict(_facts("g3"), memory_total_mib=512)}
    monkeypatch.setattr(drain.libvirt_facts, "gather_hypervisor_facts", lambda uri, *a, **k: by_uri[uri])
    with pytest.raises(drain.DrainError) as caught:
        drain.drain_host("hv-1", [{"name": "hv-1", "uri": "test:///hv-1"}, {"name": "hv-2", "uri": "test:///hv-2"}],
                         DrainOptions(cpu_check=False), connect=lambda uri: _ClosingConnection(), migrate=_never_migrates)
    assert caught.value.message.startswith("refusing to drain hv-1, nothing was moved: the cluster cannot absorb 2 of")
    result = caught.value.result
    assert result["locations"] == {"g1": "hv-1", "g2": "hv-1"}
    assert (result["host"], result["changed"], result["check_mode"], result["migrations"]) == ("hv-1", False, False, [])


class _Concurrency:
    """A migration that takes a little while and records how many ran at once, per destination too."""

    def __init__(self, source_host):
        self.recorder = Recorder(duration=0.05)
        self.source_host = source_host

    def __call__(self, guest, source_uri, dest_uri, options, **kwargs):
        self.recorder({"guest": guest, "destination": kwargs["dest_name"]})
        self.source_host.domains[guest].active = False
        return {}


def _spread_drain(monkeypatch, options, destinations):
    names = ["g%d" % i for i in range(4)]
    source = _FakeSourceHost(*[_FakeDomain(n) for n in names])
    by_uri = {"test:///hv-1": _facts(*names)}
    by_uri.update({"test:///%s" % d: _facts() for d in destinations})
    monkeypatch.setattr(drain.libvirt_facts, "gather_hypervisor_facts", lambda uri, *a, **k: by_uri[uri])
    connections = {uri: _ClosingConnection() for uri in by_uri}
    connections["test:///hv-1"] = source
    migrate = _Concurrency(source)
    drain.drain_host("hv-1", [ClusterHost(h, "test:///%s" % h) for h in ["hv-1"] + destinations], options,
                     connect=connections.__getitem__, migrate=migrate)
    return migrate.recorder


def test_the_drain_runs_its_migrations_within_its_own_limits(monkeypatch):
    one_at_a_time = _spread_drain(monkeypatch, DrainOptions(cpu_check=False, max_parallel=1,
                                                            max_incoming_per_destination=3), ["hv-2", "hv-3"])
    assert one_at_a_time.peak == 1
    two_into_one = _spread_drain(monkeypatch, DrainOptions(cpu_check=False, max_parallel=4,
                                                           max_incoming_per_destination=2), ["hv-2"])
    assert two_into_one.peak_per_destination == {"hv-2": 2}


def test_a_failed_drain_also_says_where_the_guests_it_did_not_move_are(monkeypatch):
    pinned = _FakeDomain("pinned")
    source = _FakeSourceHost(_FakeDomain("g1"), pinned)

    def fails(guest, source_uri, dest_uri, options, **kwargs):
        raise MigrationError("g1 still running on hv-1: aborted", guest=guest, reason="stalled", location="source",
                             running_on="hv-1")
    with pytest.raises(drain.DrainError) as caught:
        _end_of_drain(monkeypatch, source, [("g1", True), ("pinned", False)],
                      DrainOptions(cpu_check=False, unmovable="leave"), fails)
    assert caught.value.result["locations"] == {"g1": "hv-1", "pinned": "hv-1"}
    assert caught.value.result["where"] == {"g1": "hv-1", "pinned": "hv-1"}
    assert caught.value.message == ("drain of hv-1 stopped: g1 still running on hv-1: aborted. Where the guests are: "
                                    "g1 on hv-1, pinned on hv-1")


def test_a_drain_that_only_stops_a_guest_changed_the_host(monkeypatch):
    pinned = _FakeDomain("pinned")
    result = _end_of_drain(monkeypatch, _FakeSourceHost(pinned), [("pinned", False)],
                           DrainOptions(cpu_check=False, unmovable="shutdown", shutdown_timeout=5), _never_migrates)
    assert result["migrations"] == [] and result["changed"] is True
    assert result["locations"] == {"pinned": "hv-1"} and result["where"] == {"pinned": "hv-1"}


class _FakeTime:
    """time of drain.py: monotonic() moves only with sleep() (or by ``step`` per call)."""

    def __init__(self, now=100.0, step=0.0):
        self.now = now
        self.step = step
        self.sleeps = []

    def monotonic(self):
        now = self.now
        self.now += self.step
        return now

    def time(self):  # the wall clock (moves_began), at the same pace
        return 1.7e9 + self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_drain_reports_its_duration_to_the_millisecond(monkeypatch):
    source = _FakeSourceHost(_FakeDomain("g1"))
    fake = _FakeTime(now=100.0, step=1.23456)
    monkeypatch.setattr(drain, "time", fake)
    result = _end_of_drain(monkeypatch, source, [("g1", True)], DrainOptions(cpu_check=False), _migrates(source))
    assert result["elapsed_s"] == 1.235


class _Guest:
    def __init__(self, active_checks=None, shutdown_error=None):
        self.active_checks = list(active_checks or [])
        self.shutdown_error = shutdown_error
        self.asked = 0

    def isActive(self):
        if not self.active_checks:
            return True
        answer = self.active_checks.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def shutdown(self):
        if self.shutdown_error:
            raise self.shutdown_error
        self.asked += 1


class _Conn:
    def __init__(self, guest):
        self.guest = guest

    def lookupByName(self, name):
        return self.guest


def test_a_clean_shutdown_waits_its_timeout_in_one_second_steps_and_never_longer(monkeypatch):
    fake = _FakeTime(now=0.0)
    monkeypatch.setattr(drain, "time", fake)
    assert drain._shutdown_cleanly(_Conn(_Guest()), "pinned", 3) == (
        "still running 3 s after a clean shutdown request (not forced)")
    assert fake.sleeps == [1, 1, 1]


def test_a_clean_shutdown_ends_when_the_guest_is_off_or_gone(monkeypatch):
    monkeypatch.setattr(drain, "time", _FakeTime(now=0.0))
    off_later = _Guest(active_checks=[True, True, False])
    assert drain._shutdown_cleanly(_Conn(off_later), "pinned", 10) is None and off_later.asked == 1
    assert drain._shutdown_cleanly(_Conn(_Guest(active_checks=[True, RuntimeError("gone")])), "pinned", 10) is None
    already_off = _Guest(active_checks=[False])
    assert drain._shutdown_cleanly(_Conn(already_off), "pinned", 10) is None and already_off.asked == 0
    assert drain._shutdown_cleanly(_Conn(_Guest(shutdown_error=RuntimeError("agent not responding"))), "pinned", 10) == (
        "shutdown request failed: agent not responding")


def test_only_running_guests_are_listed_on_the_host():
    class Conn:
        def listAllDomains(self, flags=0):
            everything = [_FakeDomain("b"), _FakeDomain("a"), _FakeDomain("stopped")]
            return everything[:2] if flags == drain.libvirt_connection.VIR_CONNECT_LIST_DOMAINS_ACTIVE else everything
    assert drain.running_guest_names(Conn()) == ["a", "b"]


def test_the_outcome_of_a_move_not_started_and_the_timings_to_the_millisecond():
    plan = moves(("a", "hv-2"), ("b", "hv-3"))
    outcomes = drain.run_moves(plan, Recorder(fail={"a"}, duration=0), max_parallel=1,
                               clock=_ticks(10.0, 11.2344, 12.56789))
    assert (outcomes[0]["started_s"], outcomes[0]["ended_s"]) == (1.234, 2.568)
    assert outcomes[1] == {"guest": "b", "source": "hv-1", "destination": "hv-3", "status": "not_started",
                           "running_on": "hv-1", "location": "source", "where": "hv-1", "start_index": None,
                           "error": "not started: an earlier migration of the drain failed"}


def test_each_migration_runs_in_a_named_daemon_thread():
    # Named for thread dumps; a daemon so that a migration hung in libvirt cannot keep the process alive.
    seen = []
    drain.run_moves(moves(("web1", "hv-2")), lambda move: seen.append(threading.current_thread()) or {})
    assert seen[0].name == "drain-web1" and seen[0].daemon is True


def test_guests_on_a_host_and_where_a_guest_without_a_place_is():
    view_ = view(HOSTS, [Guest("a", 256, 1, "hv-1"), Guest("b", 256, 1, "hv-2"), Guest("c", 256, 1, "hv-1")])
    assert [g.name for g in view_.guests_on("hv-1")] == ["a", "c"]
    assert drain._where([], [{"guest": "a", "where": None}]) == {"a": "unknown"}


def test_the_cpu_check_tells_cpus_of_other_architectures_or_domain_types_apart(monkeypatch):
    asked = []

    class Oracle:
        def __init__(self, connections):
            pass

        def compare(self, host, xml, arch, virttype):
            asked.append((arch, virttype))
    monkeypatch.setattr(drain.libvirt_facts, "LibvirtCpuOracle", Oracle)
    check = drain.CpuChecker({})
    for arch, virttype in (("x86_64", "kvm"), ("aarch64", "kvm"), ("x86_64", "qemu"), ("x86_64", "kvm")):
        check(Guest("g", 512, 1, cpu={"xml": "<cpu/>", "arch": arch, "virttype": virttype}), HostCapacity("hv-2", 4096, 2))
    assert asked == [("x86_64", "kvm"), ("aarch64", "kvm"), ("x86_64", "qemu")]


def test_a_hosts_facts_become_capacity_with_the_drain_options(monkeypatch):
    facts = _facts("g1", "g2", "g3")
    facts["guests"][2]["local_disks"] = ["/var/lib/libvirt/images/g3.qcow2"]
    options = DrainOptions(unmovable_guests=["g1"], anti_affinity_groups={"web": ["g2"]},
                           migration={"copy_storage": True})
    capacity, guests = drain.host_from_facts(ClusterHost("hv-1", "test:///hv-1", in_maintenance=True), facts, options)
    assert capacity.name == "hv-1" and capacity.in_maintenance is True
    by_name = {g.name: g for g in guests}
    assert by_name["g1"].movable is False and by_name["g2"].anti_affinity_group == "web"
    assert by_name["g3"].movable is True  # local disks are copied
    asked = []
    monkeypatch.setattr(drain.libvirt_facts, "gather_hypervisor_facts",
                        lambda uri, path, conn=None: asked.append((uri, path, conn)) or facts)
    drain.gather_host("conn-1", ClusterHost("hv-1", "test:///hv-1"), DrainOptions(shared_storage_path="/srv/nfs"))
    assert asked == [("test:///hv-1", "/srv/nfs", "conn-1")]


# --- migrations into one destination, counted across drains (drains side by side) ------------

class _ListedDomain:
    def __init__(self, name, state, reason):
        self._name, self._state = name, [state, reason]

    def name(self):
        return self._name

    def state(self):
        return self._state


class _Destination:
    """A destination's connection; ``arriving`` lists, poll after poll, the guests arriving on it."""

    def __init__(self, *arriving):
        self.arriving = list(arriving)
        self.asked = 0

    def listAllDomains(self, flags=0):
        assert flags == drain.libvirt_connection.VIR_CONNECT_LIST_DOMAINS_ACTIVE
        names = self.arriving[min(self.asked, len(self.arriving) - 1)] if self.arriving else []
        self.asked += 1
        return [_ListedDomain(name, drain.libvirt_connection.VIR_DOMAIN_PAUSED,
                              drain.libvirt_connection.VIR_DOMAIN_PAUSED_MIGRATION) for name in names]

    def close(self):
        return 0


class _Clock:
    def __init__(self):
        self.now = 0.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


MOVE = {"guest": "g1", "source": "hv-1", "destination": "hv-2"}


def test_arriving_guests_are_the_ones_paused_for_a_migration():
    paused, running = drain.libvirt_connection.VIR_DOMAIN_PAUSED, drain.libvirt_connection.VIR_DOMAIN_RUNNING

    class Host:
        def listAllDomains(self, flags=0):
            return [_ListedDomain("web", running, 1), _ListedDomain("in-b", paused, 2),
                    _ListedDomain("in-a", paused, 2), _ListedDomain("held", paused, 1)]
    assert drain.arriving_guests(Host()) == ["in-a", "in-b"]


def test_a_move_waits_while_another_drain_sends_a_guest_to_its_destination():
    clock = _Clock()
    destination = _Destination(["other"], ["other"], [])
    room = drain.IncomingRoom({"hv-2": destination}, 1, timeout=60, poll=1.0, clock=clock, sleep=clock.sleep)
    assert room.enter(MOVE) == ["other"]
    assert clock.slept == [1.0, 1.0] and destination.asked == 3


def test_a_drains_own_moves_count_once_and_leave_frees_the_room():
    clock = _Clock()
    # Its own g1 is listed arriving while g2 asks: with a limit of 2 that is room for g2.
    destination = _Destination(["g1"])
    room = drain.IncomingRoom({"hv-2": destination}, 2, timeout=0, clock=clock, sleep=clock.sleep)
    assert room.enter(MOVE) == []
    assert room.enter(dict(MOVE, guest="g2")) == [] and clock.slept == []
    # A third of its own would exceed the limit, until one of them is through.
    with pytest.raises(drain.MigrationError) as refused:
        room.enter(dict(MOVE, guest="g3"))
    assert "hv-2 still receives g1, g2 after 0 s" in refused.value.message
    room.leave(MOVE)
    destination.arriving = [["g2"]]  # g1 arrived
    assert room.enter(dict(MOVE, guest="g3")) == [] and clock.slept == []


def test_a_destination_that_keeps_receiving_refuses_the_move_and_the_guest_stays():
    clock = _Clock()
    room = drain.IncomingRoom({"hv-2": _Destination(["other", "x"])}, 1, timeout=5, poll=1.0, clock=clock, sleep=clock.sleep)
    with pytest.raises(drain.MigrationError) as refused:
        room.enter(MOVE)
    error = refused.value
    assert (error.reason, error.location, error.running_on) == ("refused-before-start", "source", "hv-1")
    assert error.message == ("g1 not moved, still running on hv-1: hv-2 still receives other, x after 5 s of waiting"
                             " (max_incoming_per_destination 1)")
    assert clock.now == 5.0


def test_a_destination_that_cannot_list_its_guests_refuses_the_move_naming_it():
    class Broken:
        def listAllDomains(self, flags=0):
            raise RuntimeError("connection reset")
    with pytest.raises(drain.MigrationError) as refused:
        drain.IncomingRoom({"hv-2": Broken()}, 1).enter(MOVE)
    assert "g1 not moved, still running on hv-1: hv-2 could not say what arrives on it" in refused.value.message
    assert "connection reset" in refused.value.message


def test_the_drain_waits_for_another_drains_migration_into_its_destination(monkeypatch):
    source = _FakeSourceHost(_FakeDomain("g1"))
    by_uri = {"test:///hv-1": _facts("g1"), "test:///hv-2": _facts()}
    monkeypatch.setattr(drain.libvirt_facts, "gather_hypervisor_facts", lambda uri, *a, **k: by_uri[uri])
    destination = _Destination(["other"], [])
    monkeypatch.setattr(drain, "INCOMING_POLL_S", 0.01)
    migrated_after = []

    def migrate(guest, *args, **kwargs):
        migrated_after.append(destination.asked)
        source.domains[guest].active = False
        return {"downtime_ms": 20}
    connections = {"test:///hv-1": source, "test:///hv-2": destination}
    result = drain.drain_host("hv-1", [ClusterHost("hv-1", "test:///hv-1"), ClusterHost("hv-2", "test:///hv-2")],
                              DrainOptions(cpu_check=False), connect=connections.__getitem__, migrate=migrate)
    (outcome,) = result["migrations"]
    assert outcome["status"] == "migrated" and outcome["result"]["waited_for_incoming"] == ["other"]
    assert migrated_after == [2]  # asked twice: busy, then free


def test_two_drains_sharing_lock_files_never_both_take_the_last_place(tmp_path):
    """The drains of a run, in two workers of one controller: the second waits for the first's
    lock even before libvirt lists the first's guest arriving (seconds after its start)."""
    clock = _Clock()
    first = drain.IncomingRoom({"hv-2": _Destination([])}, 1, lock_dir=str(tmp_path), timeout=3, clock=clock,
                               sleep=clock.sleep)
    second = drain.IncomingRoom({"hv-2": _Destination([])}, 1, lock_dir=str(tmp_path), timeout=3, clock=clock,
                                sleep=clock.sleep)
    assert first.enter(MOVE) == []
    with pytest.raises(drain.MigrationError) as refused:
        second.enter(dict(MOVE, guest="g7", source="hv-3"))
    assert "g7 not moved, still running on hv-3: hv-2 still receives g1 after 3 s" in refused.value.message
    first.leave(MOVE)
    assert second.enter(dict(MOVE, guest="g7", source="hv-3")) == []
    # Two places with a limit of 2: the first takes the other one meanwhile.
    assert drain.IncomingRoom({"hv-2": _Destination([])}, 2, lock_dir=str(tmp_path)).enter(MOVE) == []


def _queued(tmp_path, destination="hv-2"):
    queue_dir = tmp_path / ("%s.queue" % destination)
    return sorted(p.name for p in queue_dir.iterdir() if not p.name.startswith(".")) if queue_dir.exists() else []


def test_a_move_of_another_drain_that_waited_takes_the_place_before_the_next_move_of_the_first(tmp_path):
    """Fairness: the first drain's next move, asking the moment its previous move left, does not
    overtake the second drain's move that has been waiting for the destination meanwhile."""
    first = drain.IncomingRoom({"hv-2": _Destination([])}, 1, lock_dir=str(tmp_path), timeout=0)
    second = drain.IncomingRoom({"hv-2": _Destination([])}, 1, lock_dir=str(tmp_path), timeout=30, poll=0.02)
    assert first.enter(MOVE) == []
    waiting = dict(MOVE, guest="g7", source="hv-3")
    entered = {}
    waiter = threading.Thread(target=lambda: entered.update(waited_for=second.enter(waiting)))
    waiter.start()
    deadline = time.monotonic() + 10
    while not _queued(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(_queued(tmp_path)) == 1  # the second drain's move waits, in line
    with second._lock:  # noqa: SLF001 - holds the waiter between two polls while the first asks again
        first.leave(MOVE)
        with pytest.raises(drain.MigrationError) as refused:
            first.enter(dict(MOVE, guest="g2"))
    assert "hv-2 still receives g7" in refused.value.message
    waiter.join(10)
    assert entered["waited_for"] == ["g1"]
    assert _queued(tmp_path) == []  # every ticket removed once its move entered or gave up
    second.leave(waiting)
    assert first.enter(dict(MOVE, guest="g2")) == []


def test_a_ticket_left_by_a_drain_that_died_is_passed_over_and_removed(tmp_path):
    queue_dir = tmp_path / "hv-2.queue"
    queue_dir.mkdir()
    (queue_dir / ("%020d-1-0" % 1)).write_text("g9")  # nobody holds its lock: its drain is gone
    room = drain.IncomingRoom({"hv-2": _Destination([])}, 1, lock_dir=str(tmp_path), timeout=0)
    assert room.enter(MOVE) == []
    assert _queued(tmp_path) == []


def test_moves_waiting_ahead_take_only_the_places_they_need(tmp_path):
    """With two places and one move waiting ahead (its ticket held), a later move still takes
    the other place."""
    queue_dir = tmp_path / "hv-2.queue"
    queue_dir.mkdir()
    ahead = queue_dir / ("%020d-1-0" % 1)
    ahead.write_text("g9")
    with open(ahead) as held:
        drain.fcntl.flock(held, drain.fcntl.LOCK_EX)  # a live drain's move, waiting
        assert drain.IncomingRoom({"hv-2": _Destination([])}, 2, lock_dir=str(tmp_path), timeout=0).enter(MOVE) == []
        with pytest.raises(drain.MigrationError) as refused:
            drain.IncomingRoom({"hv-2": _Destination([])}, 2, lock_dir=str(tmp_path),
                               timeout=0).enter(dict(MOVE, guest="g2"))
    assert "hv-2 still receives g1, g9" in refused.value.message
