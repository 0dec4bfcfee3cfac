"""Run events and the report built from them (pure, no lab)."""
import html.parser
import json
import os
import threading
import xml.dom.minidom

from ansible_collections.virtfleet.cluster.plugins.module_utils import report_rendering, run_events, run_report

T0 = 1_790_000_000.0


def ev(offset, type_, **fields):
    return dict(fields, ts=T0 + offset, type=type_, run_id="run-1")


def sample_events(fail=False):
    events = [
        ev(0, "run_start", clusters={"a": ["a1", "a2"], "b": ["b1"]}),
        ev(1, "plan", waves=[["a1", "b1"], ["a2"]], skipped={},
           clusters={"a": {"max_unavailable": 1, "hosts": ["a1", "a2"]},
                     "b": {"max_unavailable": 1, "hosts": ["b1"]}}),
        ev(2, "host_start", cluster="a", host="a1", wave=1),
        ev(2, "host_start", cluster="b", host="b1", wave=1),
        ev(2, "phase", cluster="a", host="a1", phase="drain", state="start"),
        ev(4, "migration", cluster="a", host="a1", guest="g1", source="a1", destination="a2",
           purpose="drain", started=T0 + 2, ended=T0 + 3, time_ms=700, downtime_ms=40, status="ok"),
        ev(4, "phase", cluster="a", host="a1", phase="drain", state="end"),
        ev(5, "phase", cluster="a", host="a1", phase="reboot", state="start"),
        ev(9, "phase", cluster="a", host="a1", phase="reboot", state="end"),
        ev(10, "host_done", cluster="a", host="a1", boot_id_before="x", boot_id_after="y",
           rebooted=True),
        ev(10, "host_start", cluster="a", host="a2", wave=2),
        ev(11, "migration", cluster="a", host="a2", guest="g1", source="a2", destination="a1",
           purpose="drain", time_ms=500, downtime_ms=120, status="ok"),
        ev(11, "migration", cluster="a", host="a2", guest="g2", source="a2", destination="a1",
           purpose="drain", time_ms=900, downtime_ms=None, status="failed", message="boom"),
    ]
    if fail:
        events += [ev(12, "host_failed", cluster="a", host="a2", phase="drain", message="g2 did not move"),
                   ev(12, "cluster_stopped", cluster="a", reason="a2 failed"),
                   ev(13, "guest_locations", locations={"g1": "a1", "g2": "a2"}),
                   ev(14, "run_end", status="failed", message="cluster a stopped")]
    else:
        events += [ev(12, "host_done", cluster="a", host="a2", rebooted=True),
                   ev(12, "host_done", cluster="b", host="b1", rebooted=False),
                   ev(14, "run_end", status="ok")]
    return events


def test_totals_of_a_successful_run():
    report = run_report.build_report(sample_events())
    totals = report["totals"]
    assert totals["hosts_patched"] == 3
    assert totals["hosts_rebooted"] == 2
    assert totals["migrations"] == 2 and totals["failed_migrations"] == 1
    assert totals["guests_moved"] == 1
    assert totals["total_downtime_ms"] == 160
    assert totals["worst_downtime_ms"] == 120 and totals["worst_downtime_guest"] == "g1"
    assert report["run"]["status"] == "ok" and totals["duration_s"] == 14
    assert report["clusters"]["a"]["status"] == "done"
    assert report["hosts"]["a1"]["wave"] == 1 and report["hosts"]["a2"]["wave"] == 2
    assert [p["phase"] for p in report["hosts"]["a1"]["phases"]] == ["drain", "reboot"]
    assert report["guests"]["g1"]["total_downtime_ms"] == 160
    assert report["guests"]["g1"]["location"] == "a1"


def test_back_to_back_hosts_are_not_concurrent():
    report = run_report.build_report(sample_events())
    # a1 unmarked at +10 and a2 marked at +10: never two of cluster a at once.
    assert report["clusters"]["a"]["max_in_maintenance"] == 1


def test_each_cluster_has_its_own_span_and_the_plan_its_slot_order():
    events = sample_events()
    events[1]["slot_order"] = {"a": [["a1"], ["a2"]], "b": [["b1"]]}
    report = run_report.build_report(events)
    assert (report["clusters"]["a"]["started"], report["clusters"]["a"]["ended"]) == (T0 + 2, T0 + 12)
    assert (report["clusters"]["b"]["started"], report["clusters"]["b"]["ended"]) == (T0 + 2, T0 + 12)
    assert report["plan"]["slot_order"] == {"a": [["a1"], ["a2"]], "b": [["b1"]]}
    assert "(10 s)" in report_rendering.render_markdown(report)


def test_max_concurrent():
    assert run_report.max_concurrent([]) == 0
    assert run_report.max_concurrent([(0, 5), (5, 10)]) == 1
    assert run_report.max_concurrent([(0, 5), (4, 10), (4.5, 6)]) == 3


def test_failed_run_says_what_happened_and_where_guests_are():
    report = run_report.build_report(sample_events(fail=True))
    assert report["run"]["status"] == "failed"
    assert report["clusters"]["a"]["status"] == "stopped"
    host = report["hosts"]["a2"]
    assert host["status"] == "failed" and host["failed_phase"] == "drain"
    assert host.get("end_open")  # still marked: in maintenance to the end of the log
    assert report["guests"]["g2"]["location"] == "a2"
    md = report_rendering.render_markdown(report)
    assert "FAILED" in md and "g2 did not move" in md and "STOPPED" in md


def test_report_of_a_crashed_run_without_run_end():
    events = sample_events()[:9]  # log stops while a1 reboots
    events.append(ev(7, "phase", cluster="a", host="a1", phase="verify", state="start"))
    report = run_report.build_report(events)
    assert report["run"]["status"] == "running"
    assert report["hosts"]["a1"]["status"] == "in_maintenance"
    assert any(p["state"] == "unfinished" for p in report["hosts"]["a1"]["phases"])
    report_rendering.render_html(report)


def test_svg_and_html_are_well_formed():
    report = run_report.build_report(sample_events(fail=True))
    svg = report_rendering.render_svg(report)
    xml.dom.minidom.parseString(svg)
    assert svg.count("<rect") >= 4
    page = report_rendering.render_html(report)
    assert "<svg" in page and "Where every guest is" in page


def test_names_are_escaped():
    events = sample_events()
    events.append(ev(13, "host_skipped", cluster="b", host="<b2>", reason="a & b"))
    page = report_rendering.render_html(run_report.build_report(events))
    assert "<b2>" not in page and "&lt;b2&gt;" in page
    xml.dom.minidom.parseString(report_rendering.render_svg(run_report.build_report(events)))


def test_append_load_write(tmp_path):
    directory = str(tmp_path / "run-1")
    for event in sample_events():
        run_events.append_event(directory, event)
    with open(os.path.join(directory, run_events.EVENTS_FILE), "a") as handle:
        handle.write('{"torn": ')  # crash mid-line
    report, files = report_rendering.write_report(directory)
    assert report["totals"]["hosts_patched"] == 3
    assert set(files) == {"report_json", "report_html", "report_md", "timeline_svg"}
    assert json.load(open(files["report_json"]))["totals"]["migrations"] == 2


def test_concurrent_appends_do_not_interleave(tmp_path):
    directory = str(tmp_path)

    def writer(n):
        for i in range(200):
            run_events.append_event(directory, {"type": "phase", "host": "h%d" % n, "i": i, "pad": "x" * 500})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = open(os.path.join(directory, run_events.EVENTS_FILE)).read().splitlines()
    assert len(lines) == 1200
    assert all(json.loads(line)["type"] == "phase" for line in lines)


def test_empty_log():
    report = run_report.build_report([])
    assert report["totals"]["hosts_planned"] == 0
    report_rendering.render_html(report)
    report_rendering.render_markdown(report)


def test_dry_run_plan_is_rendered():
    events = [ev(0, "run_start", dry_run=True, clusters={"a": ["a1"]}),
              ev(1, "plan", waves=[["a1"]], skipped={}, clusters={"a": {"max_unavailable": 1, "hosts": ["a1"]}},
                 capacity={"ok": True, "problems": []},
                 drain_plans={"a1": {"moves": [{"guest": "g1", "destination": "a2"}], "problems": []}}),
              ev(2, "run_end", status="dry_run")]
    report = run_report.build_report(events)
    assert report["run"]["dry_run"] and report["clusters"]["a"]["status"] == "dry_run"
    assert "g1 -> a2" in report_rendering.render_markdown(report)
    assert "g1 &rarr; a2" in report_rendering.render_html(report)


def test_end_event_with_its_own_start():
    events = [ev(0, "run_start", clusters={"a": ["a1"]}),
              ev(5, "phase", cluster="a", host="a1", phase="patch", state="end", start=T0 + 2),
              ev(9, "phase", cluster="a", host="a1", phase="reboot", state="failed", start=T0 + 6)]
    phases = run_report.build_report(events)["hosts"]["a1"]["phases"]
    assert [(p["phase"], p["end"] - p["start"], p["state"]) for p in phases] == [
        ("patch", 3.0, "end"), ("reboot", 3.0, "failed")]


# --- census: every guest that ran at the start runs somewhere at the end (issue 10, case 1d) ---
def census_events(start, end, unasked=(), extra=()):
    return [ev(0, "run_start", clusters={"a": ["a1", "a2"]}), *extra,
            ev(20, "census", start=start, end=end, unasked=list(unasked)),
            ev(21, "run_end", status="ok")]


def test_a_guest_that_runs_nowhere_at_the_end_fails_the_run_naming_it():
    report = run_report.build_report(census_events({"g1": "a1", "g2": "a2"}, {"g1": "a2"}))
    assert report["census"]["missing"] == [
        {"guest": "g2", "started_on": "a2", "why": "runs on no host of the run's clusters"}]
    assert report["run"]["status"] == "failed"
    assert "g2 (ran on a2 at the start; runs on no host" in report["run"]["message"]
    assert "g2" in report_rendering.render_markdown(report)


def test_every_guest_accounted_for_keeps_the_run_ok():
    report = run_report.build_report(census_events({"g1": "a1", "g2": "a2"}, {"g1": "a2", "g2": "a2", "new": "a1"}))
    assert report["census"] == {"started": 2, "running": 2, "missing": [], "stopped_allowed": [], "unasked": []}
    assert report["run"]["status"] == "ok"


def test_a_host_that_could_not_be_asked_at_the_end_leaves_its_guests_unaccounted():
    report = run_report.build_report(census_events({"g1": "a1"}, {}, unasked=["a1"]))
    assert report["census"]["missing"][0]["why"] == "not found: a1 could not be asked at the end"
    assert report["run"]["status"] == "failed"


def test_a_guest_stopped_as_the_policy_allows_is_reported_not_lost():
    stop = ev(5, "phase", cluster="a", host="a1", phase="shutdown g2", state="end", details={"guest": "g2", "ok": True})
    report = run_report.build_report(census_events({"g1": "a1", "g2": "a1"}, {"g1": "a2"}, extra=[stop]))
    assert report["census"]["missing"] == [] and report["census"]["stopped_allowed"] == ["g2"]
    assert report["run"]["status"] == "ok"


def test_a_skipped_move_back_is_reported_as_skipped_not_as_a_failed_migration():
    events = [ev(0, "run_start", clusters={"a": ["a1", "a2"]}),
              ev(5, "migration", cluster="a", guest="g1", source="a2", destination="a1", purpose="move_back",
                 status="skipped", message="a1 cannot take it: needs 512 MiB, 256 MiB left"),
              ev(6, "run_end", status="ok")]
    report = run_report.build_report(events)
    assert report["totals"]["failed_migrations"] == 0 and report["totals"]["skipped_migrations"] == 1
    assert report["guests"]["g1"]["failed_migrations"] == 0
    html_rows = report_rendering.render_html(report).split("<h2>Where every guest is", maxsplit=1)[0]
    assert 'class="failed"' not in html_rows.split("move_back")[-1]


def test_a_failed_migration_row_says_where_the_guest_was_left():
    """A failed migration whose guest runs nowhere (left paused, or active on both) has no
    destination: the "to" column says where it is, not "None" (issue 10 case 15)."""
    events = [ev(0, "run_start", clusters={"a": ["a1", "a2"]}),
              ev(5, "migration", cluster="a", host="a1", guest="g1", source="a1", destination=None,
                 where="a1 (paused)", purpose="drain", status="failed", message="g1 left paused on a1"),
              ev(6, "migration", cluster="a", host="a1", guest="g2", source="a1", destination="a1",
                 where="a1", purpose="drain", status="failed", message="aborted, still on a1"),
              ev(7, "run_end", status="failed")]
    report = run_report.build_report(events)
    md = report_rendering.render_markdown(report)
    row = next(line for line in md.splitlines() if line.startswith("| g1 | drain |"))
    assert row.split(" | ")[3] == "a1 (paused)"
    assert "| g2 | drain | a1 | a1 |" in md  # a destination recorded is shown as before
    page = report_rendering.render_html(report)
    assert "<td>g1</td><td>drain</td><td>a1</td><td>a1 (paused)</td>" in page
    assert "None" not in row


def test_hostile_guest_and_host_names_are_escaped_in_html():
    """Names and messages come from the hypervisors and the operators: in the HTML page they
    are text, never markup (the page is opened in a browser, maybe from AWX artifacts)."""
    host = '<img src=x onerror="alert(1)">'
    guest = "<script>alert('g')</script>"
    events = [ev(0, "run_start", clusters={"a": [host]}),
              ev(1, "plan", waves=[[host]], skipped={}, clusters={"a": {"max_unavailable": 1, "hosts": [host]}},
                 capacity={"ok": False, "problems": ["<b>%s</b> is full" % host]},
                 drain_plans={host: {"moves": [{"guest": guest, "destination": host}], "problems": ["<i>no</i>"]}}),
              ev(2, "host_start", cluster="a", host=host, wave=1),
              ev(3, "phase", cluster="a", host=host, phase="<u>drain</u>", state="failed", start=T0 + 2),
              ev(4, "migration", cluster="a", host=host, guest=guest, source=host, destination=None,
                 where="%s (paused)" % host, purpose="drain", status="failed", message="<em>%s</em> paused" % guest),
              ev(5, "host_failed", cluster="a", host=host, phase="drain", message="<blink>%s</blink>" % guest),
              ev(6, "cluster_stopped", cluster="a", reason="<marquee>stopped</marquee>"),
              ev(7, "guest_locations", locations={guest: host}),
              ev(8, "run_end", status="failed", message="<h1>%s</h1>" % guest)]
    report = run_report.build_report(events)
    page = report_rendering.render_html(report)

    class Tags(html.parser.HTMLParser):
        seen = set()

        def handle_starttag(self, tag, attrs):
            self.seen.add(tag)

    parser = Tags()
    parser.feed(page)
    assert parser.seen <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "b", "div", "span",
                           "svg", "text", "tspan", "line", "rect", "ol", "ul", "li", "table", "tr", "th", "td"}
    assert page.count("<h1>") == 1 and "onerror=\"" not in page
    assert "&lt;script&gt;alert(&#39;g&#39;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page
    xml.dom.minidom.parseString(report_rendering.render_svg(report))
    assert guest in report_rendering.render_markdown(report)  # Markdown shows the text as it is


def test_every_event_type_has_one_handler():
    lines = run_events.__doc__.splitlines()
    rules = [index for index, line in enumerate(lines) if line.startswith("=====")]
    documented = {line.split()[0] for line in lines[rules[0] + 1:rules[1]] if line and not line.startswith(" ")}
    assert documented == set(run_report.HANDLERS)


def test_the_collections_own_canary_is_no_guest_and_its_downtime_no_customers():
    """Its migrations are listed (they happened), but it has no location, no guest entry and no
    share of the guest downtime; a customer guest named as canary counts as the customer's."""
    canary = [ev(6, "migration", cluster="a", host="a1", guest="virtfleet-canary-a1", source="a2", destination=dest,
                 purpose="canary", time_ms=400, downtime_ms=900, status="ok") for dest in ("a1", "a2")]
    report = run_report.build_report(sample_events()[:7] + canary + sample_events()[7:])
    assert [m["guest"] for m in report["migrations"] if m["purpose"] == "canary"] == ["virtfleet-canary-a1"] * 2
    assert "virtfleet-canary-a1" not in report["guests"]
    assert report["totals"]["worst_downtime_guest"] == "g1" and report["totals"]["total_downtime_ms"] == 160
    named = [dict(m, guest="g2") for m in canary]
    report = run_report.build_report(sample_events()[:7] + named + sample_events()[7:])
    assert report["guests"]["g2"]["total_downtime_ms"] == 1800 and report["totals"]["worst_downtime_guest"] == "g2"
