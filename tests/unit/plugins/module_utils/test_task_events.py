"""The events host_drain and host_canary record of their own outcome (their ``report`` option),
as the run's report reads them."""
import json

from ansible_collections.virtfleet.cluster.plugins.module_utils import report_task, run_events, run_report

BEGAN = 1000.0


def _drain_outcome(**extra):
    return dict({
        "moves_began": 1004.0,
        "migrations": [
            {"guest": "g1", "source": "hv-1", "destination": "hv-2", "status": "migrated", "running_on": "hv-2",
             "started_s": 0.5, "ended_s": 3.0, "result": {"total_time_ms": 2500, "downtime_ms": 40}},
            {"guest": "g2", "source": "hv-1", "destination": "hv-3", "status": "failed", "running_on": "hv-1",
             "where": "hv-1 (paused)", "started_s": 1.0, "ended_s": 9.0, "result": None, "error": "job failed"}],
        "shutdown": [{"guest": "license", "ok": True, "error": None}],
        "locations": {"g1": "hv-2", "g2": "hv-1"}, "where": {"g2": "hv-1 (paused)"},
        "plan": {"reserved": {"hv-2": 128}}, "failed": True, "msg": "drain of hv-1 stopped: job failed"}, **extra)


def test_a_drains_events_say_each_migration_from_when_the_moves_began():
    events = run_events.drain_events(_drain_outcome(), BEGAN)
    moved, failed, stopped, phase = events
    assert (moved["status"], moved["destination"], moved["started"], moved["ended"], moved["downtime_ms"]) == (
        "ok", "hv-2", 1004.5, 1007.0, 40)
    assert (failed["status"], failed["destination"], failed["where"], failed["message"], failed["time_ms"]) == (
        "failed", "hv-1", "hv-1 (paused)", "job failed", None)
    assert {moved["purpose"], failed["purpose"]} == {"drain"}
    assert (stopped["phase"], stopped["state"]) == ("shutdown license", "end")
    assert (phase["phase"], phase["state"], phase["start"]) == ("drain", "failed", BEGAN)
    assert phase["details"]["where"] == {"g2": "hv-1 (paused)"} and phase["details"]["reserved"] == {"hv-2": 128}


def test_a_drain_that_moved_nothing_records_its_end_only():
    assert run_events.drain_events({"changed": False, "msg": "hv-1 runs no guest"}, BEGAN) == [
        {"type": "phase", "phase": "drain", "start": BEGAN, "state": "end",
         "details": {"msg": "hv-1 runs no guest", "locations": {}, "where": {}, "reserved": {}}}]


def test_a_canary_that_never_migrated_records_its_failure_only():
    events = run_events.canary_events({"failed": True, "reason": "no-canary", "msg": "no canary", "migrations": [],
                                       "passed_over": ["kvm-d: marked"]}, BEGAN)
    assert [(e["phase"], e["state"]) for e in events] == [("canary", "failed")]
    assert events[0]["details"]["passed_over"] == ["kvm-d: marked"]


def test_a_canarys_migrations_sit_between_the_phases_start_and_end():
    there = {"type": "migration", "purpose": "canary", "guest": "virtfleet-canary-hv-1", "status": "ok"}
    events = run_events.canary_events({"migrations": [there, dict(there, status="ok")], "canary": "virtfleet-canary-hv-1",
                                       "owned": True, "peer": "hv-2"}, BEGAN)
    assert [(e["type"], e.get("state")) for e in events] == [("phase", "start"), ("migration", None),
                                                             ("migration", None), ("phase", "end")]
    assert events[0]["ts"] == BEGAN and events[-1]["details"]["peer"] == "hv-2"


def test_recorded_events_carry_about_and_the_run_and_the_report_reads_them(tmp_path):
    report = {"directory": str(tmp_path), "run_id": "run-1", "about": {"cluster": "a", "host": "hv-1"}}
    events = run_events.drain_events(_drain_outcome(), BEGAN)
    outcome = report_task.record_outcome(report, events, {"failed": True, "msg": "stopped"})
    assert outcome == {"failed": True, "msg": "stopped", "recorded": 4}
    written = [json.loads(line) for line in (tmp_path / run_events.EVENTS_FILE).read_text().splitlines()]
    assert all(e["cluster"] == "a" and e["host"] == "hv-1" and e["run_id"] == "run-1" for e in written)
    built = run_report.build_report(run_events.load_events(str(tmp_path)))
    assert [(m["guest"], m["status"]) for m in built["migrations"]] == [("g1", "ok"), ("g2", "failed")]


def test_an_events_own_field_wins_over_about(tmp_path):
    report = {"directory": str(tmp_path), "run_id": None, "about": {"cluster": "a", "host": "hv-1"}}
    report_task.record_outcome(report, [{"type": "migration", "host": "hv-2"}], {})
    assert json.loads((tmp_path / run_events.EVENTS_FILE).read_text())["host"] == "hv-2"


def test_a_report_that_cannot_be_written_fails_the_task_saying_the_work_was_done(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    outcome = report_task.record_outcome({"directory": str(blocked / "report"), "about": {}},
                                         [{"type": "phase", "phase": "drain"}], {"changed": True, "msg": "drained"})
    assert outcome["failed"] and outcome["msg"].startswith("drained; then cannot write the report in ")


def test_without_a_report_nothing_is_recorded():
    assert report_task.record_outcome(None, [{"type": "phase"}], {"msg": "drained"}) == {"msg": "drained"}
