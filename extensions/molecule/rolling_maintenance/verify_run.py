# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks a rolling maintenance run on a virtfleet lab from the outside.

Used by the molecule scenario's prepare/verify playbooks and by tests/lab. Evidence comes from
what the run does not write itself wherever possible:

* reboots: the lab agent's log (one line per reboot it carried out) and each host's boot id;
* guests: every lab guest is asked for on every host's libvirt - it must run on exactly one;
* downtime: the lab's heartbeat monitor (host-timestamped heartbeat lines of every guest):
  no gap during the run longer than the downtime budget, and heartbeats still arriving;
* concurrency: the cluster's shared state history (``.virtfleet/history.jsonl``: marked /
  unmarked) - never more hosts of a cluster marked at once than its max_unavailable - and the
  run's own report (``report.json``) for the same figure.

    verify_run.py snapshot STATE_DIR OUT.json
    verify_run.py check STATE_DIR BEFORE.json REPORT_DIR --budget-ms N [--expect-all]

``check`` prints a JSON document (``problems`` empty when everything holds, plus the figures)
and exits 1 when a problem was found.
"""
import argparse
import glob
import json
import os
import sys
import time

AGENT_LOG = os.path.join("log", "agent.log")


def _lab(state_dir):
    with open(os.path.join(state_dir, "lab.json")) as handle:
        return json.load(handle)


def boot_ids(state_dir):
    ids = {}
    for path in glob.glob(os.path.join(state_dir, "hosts", "*", "boot_id")):
        with open(path) as handle:
            ids[os.path.basename(os.path.dirname(path))] = handle.read().strip()
    return ids


def snapshot(state_dir):
    """What the check compares against: boot ids, where the agent log ends, the time."""
    log = os.path.join(state_dir, AGENT_LOG)
    return {"time": time.time(), "boot_ids": boot_ids(state_dir),
            "agent_log_offset": os.path.getsize(log) if os.path.exists(log) else 0}


def reboots_since(state_dir, offset):
    counts = {}
    path = os.path.join(state_dir, AGENT_LOG)
    if not os.path.exists(path):
        return counts
    with open(path, "rb") as handle:
        handle.seek(offset)
        for raw in handle:
            line = raw.decode("utf-8", "replace")
            if " rebooted on request" in line and "host " in line:
                host = line.split("host ", 1)[1].split()[0]
                counts[host] = counts.get(host, 0) + 1
    return counts


def heartbeats(state_dir, guest):
    beats = []
    path = os.path.join(state_dir, "heartbeats", "%s.log" % guest)
    try:
        with open(path) as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 2:
                    try:
                        beats.append((float(parts[0]), int(parts[1])))
                    except ValueError:
                        continue
    except FileNotFoundError:
        pass
    return beats


def worst_gap(beats, start, end):
    """Longest time without a heartbeat within [start, end], in ms (edges included)."""
    inside = [t for t, _seq in beats if start <= t <= end]
    before = [t for t, _seq in beats if t < start]
    after = [t for t, _seq in beats if t > end]
    points = ([before[-1]] if before else []) + inside + ([after[0]] if after else [])
    if len(points) < 2:
        return None
    return round(max(b - a for a, b in zip(points, points[1:])) * 1000)


def guest_locations(lab):
    """guest -> list of hosts whose libvirt runs it (asked to every host)."""
    import libvirt  # only the check needs it
    libvirt.registerErrorHandler(lambda *args: None, None)
    where = {name: [] for name in lab["guests"]}
    unreachable = {}
    for host, info in sorted(lab["hosts"].items()):
        try:
            conn = libvirt.open(info["libvirt_uri"])
        except libvirt.libvirtError as exc:
            unreachable[host] = str(exc)
            continue
        try:
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                if dom.name() in where:
                    where[dom.name()].append(host)
        finally:
            conn.close()
    return where, unreachable


def marked_intervals(history_path, start, end):
    """host -> list of [marked, unmarked) intervals overlapping [start, end]."""
    open_marks, intervals = {}, {}
    try:
        with open(history_path) as handle:
            records = [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return intervals
    for record in sorted(records, key=lambda r: r.get("ts", 0)):
        host = record.get("host")
        if record.get("event") == "marked":
            open_marks[host] = record["ts"]
        elif record.get("event") == "unmarked" and host in open_marks:
            intervals.setdefault(host, []).append((open_marks.pop(host), record["ts"]))
    for host, since in open_marks.items():
        intervals.setdefault(host, []).append((since, end))
    return {h: [(a, b) for a, b in iv if b >= start and a <= end] for h, iv in intervals.items()}


def max_concurrent(intervals):
    points = sorted([(a, 1) for a, _end in intervals] + [(b, -1) for _start, b in intervals],
                    key=lambda p: (p[0], p[1]))
    best = current = 0
    for _instant, delta in points:
        current += delta
        best = max(best, current)
    return best


def check(state_dir, before, report_dir, budget_ms, expect_all=False):
    lab = _lab(state_dir)
    with open(os.path.join(report_dir, "report.json")) as handle:
        report = json.load(handle)
    problems = []
    start = report["run"]["started"] or before["time"]
    end = report["run"]["ended"] or time.time()

    # Reboots: exactly once for every host the run maintained, never for the others.
    reboots = reboots_since(state_dir, before.get("agent_log_offset", 0))
    now_ids = boot_ids(state_dir)
    for host in sorted(lab["hosts"]):
        entry = report["hosts"].get(host) or {}
        maintained = entry.get("status") == "done"
        want = 1 if (maintained and entry.get("rebooted")) else 0
        if expect_all and not maintained:
            problems.append("host %s was not maintained (status %s)" % (host, entry.get("status")))
        if reboots.get(host, 0) != want:
            problems.append("host %s rebooted %d times during the run, expected %d"
                            % (host, reboots.get(host, 0), want))
        if want:
            if now_ids.get(host) == before["boot_ids"].get(host):
                problems.append("host %s: boot id unchanged" % host)
            if entry.get("boot_id_before") != before["boot_ids"].get(host) or \
                    entry.get("boot_id_after") != now_ids.get(host):
                problems.append("host %s: the report's boot ids (%s -> %s) are not the lab's (%s -> %s)"
                                % (host, entry.get("boot_id_before"), entry.get("boot_id_after"),
                                   before["boot_ids"].get(host), now_ids.get(host)))

    # Guests: every one runs, on exactly one host.
    where, unreachable = guest_locations(lab)
    for host, why in unreachable.items():
        problems.append("host %s does not answer: %s" % (host, why))
    for guest, hosts in sorted(where.items()):
        if len(hosts) != 1:
            problems.append("guest %s runs on %d hosts (%s)" % (guest, len(hosts), ", ".join(hosts) or "none"))

    # Downtime as the guests lived it: heartbeat gaps within the run.
    gaps = {}
    for guest in sorted(lab["guests"]):
        beats = heartbeats(state_dir, guest)
        gap = worst_gap(beats, start, end)
        gaps[guest] = gap
        if gap is None:
            problems.append("guest %s: no heartbeat during the run" % guest)
        elif budget_ms and gap > budget_ms:
            problems.append("guest %s: heartbeat gap of %d ms exceeds the budget of %d ms"
                            % (guest, gap, budget_ms))
        if not beats or time.time() - beats[-1][0] > 10:
            problems.append("guest %s: no heartbeat in the last 10 s" % guest)

    # Concurrency per cluster, from the shared state history and from the report.
    concurrency = {}
    for cluster in sorted(lab["clusters"]):
        info = report["clusters"].get(cluster) or {}
        limit = info.get("max_unavailable") or 1
        storage = lab["clusters"][cluster].get("storage")
        history = os.path.join(storage, ".virtfleet", "history.jsonl") if storage else ""
        intervals = [iv for ivs in marked_intervals(history, start, end).values() for iv in ivs]
        seen = max_concurrent(intervals)
        concurrency[cluster] = {"limit": limit, "max_marked_at_once": seen,
                                "max_in_maintenance_report": info.get("max_in_maintenance")}
        if seen > limit or (info.get("max_in_maintenance") or 0) > limit:
            problems.append("cluster %s had %d hosts in maintenance at once (report: %s), limit %d"
                            % (cluster, seen, info.get("max_in_maintenance"), limit))

    return {"problems": problems, "reboots": reboots, "worst_heartbeat_gap_ms": gaps,
            "worst_gap_ms": max([g for g in gaps.values() if g is not None] or [0]),
            "concurrency": concurrency, "guest_locations": dict(where.items()),
            "run": report["run"], "totals": report["totals"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    snap = sub.add_parser("snapshot")
    snap.add_argument("state_dir")
    snap.add_argument("out")
    chk = sub.add_parser("check")
    chk.add_argument("state_dir")
    chk.add_argument("before")
    chk.add_argument("report_dir")
    chk.add_argument("--budget-ms", type=int, default=0)
    chk.add_argument("--expect-all", action="store_true", help="every lab host must have been maintained")
    args = parser.parse_args(argv)
    if args.command == "snapshot":
        with open(args.out, "w") as handle:
            json.dump(snapshot(args.state_dir), handle)
        return 0
    with open(args.before) as handle:
        before = json.load(handle)
    result = check(args.state_dir, before, args.report_dir, args.budget_ms, args.expect_all)
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    print()
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
