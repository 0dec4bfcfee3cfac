# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Does a hypervisor host show the signs that come before a failure? (module ``host_health``)

Read on the host, under ``root`` (``/`` in production; the lab points it at a per-host
directory where tests write counters): EDAC memory error counters, rasdaemon's database,
machine-check exceptions (``/proc/interrupts``), disk health (smartctl), filesystems gone
read-only (``/proc/mounts``), memory pressure (PSI), NIC error counters, and whether libvirt
answers.

Counters become rates against the previous sample, which is kept in the cluster's shared state
(``<storage>/.virtfleet/health/<host>.json``), so any controller sees the same history. A
source that is not there is "not_checked", never "ok": a host without EDAC is not a host with
healthy memory. A counter seen for the first time (or reset by a reboot) is a "baseline": its
rate is known from the next check.

Pure Python (no Ansible import); the few things that need the outside world (running smartctl,
opening libvirt, the clock) are passed in, so the unit tests drive every decision.
"""
from __future__ import annotations

import glob
import json
import os
import sqlite3
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils.state_store import (
    StateError, make_state_dirs, read_json, write_json_atomic)

# Most severe first: a host crossing several thresholds is reported by its worst signal, and
# health_watch empties the hosts with the worst signals first.
SIGNALS = ("memory_uncorrected", "machine_check", "disk_health", "readonly_filesystem", "libvirt",
           "memory_corrected", "memory_pressure", "nic_errors")

# Rates are per hour. An uncorrected memory error or a machine-check exception is a failure
# already survived once: any new one crosses (threshold 0). Corrected errors are normal in small
# numbers; mcelog's default trigger is 100 per 24 h per socket, a failing DIMM makes hundreds an
# hour, so 50 an hour stays quiet for a stray error and fires for a DIMM going bad.
DEFAULT_THRESHOLDS: Dict[str, float] = {
    "memory_corrected_per_hour": 50.0,
    "memory_uncorrected_per_hour": 0.0,
    "machine_check_per_hour": 0.0,
    "nic_errors_per_hour": 600.0,
    # PSI "full": share of time every non-idle task was stalled on memory (percent, over 60 s).
    "memory_pressure_full_avg60": 10.0,
}

# A rate over a shorter time than this is computed as if over this time (and the previous
# sample is kept): two checks a second apart must not turn one corrected error into 3600/h.
DEFAULT_MIN_INTERVAL_S = 300

# Filesystems that hold data and are normally writable: one of these read-only is a disk or
# filesystem error (the kernel remounts ext4 read-only on errors=remount-ro).
DISK_FILESYSTEMS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "reiserfs", "zfs", "nfs", "nfs4", "ocfs2",
                    "gfs2", "ceph", "glusterfs", "vfat")
DEFAULT_WATCHED_MOUNTS = ("/", "/var", "/var/lib/libvirt", "/var/log")

RASDAEMON_DB = "var/lib/rasdaemon/ras-mc_ctl.db"

Record = Dict[str, Any]
# runner(argv) -> (rc, stdout, stderr); probe(uri) -> None when libvirt answered, else the error
Runner = Callable[[List[str]], Tuple[int, str, str]]


class NotChecked(Exception):
    """A source that is not there (or cannot be read): the reason is reported as is."""


def under(root: str, path: str) -> str:
    """path (absolute, as on a host) under root."""
    return os.path.join(root, path.lstrip("/"))


def _read(path: str) -> str:
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _read_int(path: str) -> int:
    return int(_read(path).strip())


# ------------------------------------------------------------------ sources

def read_edac(root: str) -> Record:
    """Corrected (ce) and uncorrected (ue) error counts summed over the memory controllers."""
    controllers = sorted(glob.glob(under(root, "/sys/devices/system/edac/mc/mc[0-9]*")))
    if not controllers:
        raise NotChecked("no EDAC memory controller under %s (EDAC driver not loaded, or no ECC memory)"
                         % under(root, "/sys/devices/system/edac/mc"))
    try:
        return {"edac_ce": sum(_read_int(os.path.join(mc, "ce_count")) for mc in controllers),
                "edac_ue": sum(_read_int(os.path.join(mc, "ue_count")) for mc in controllers)}
    except (OSError, ValueError) as exc:
        raise NotChecked("EDAC counters unreadable: %s" % exc) from exc


def read_rasdaemon(root: str) -> Record:
    """Memory (corrected, uncorrected) and machine-check events recorded by rasdaemon."""
    path = under(root, "/" + RASDAEMON_DB)
    if not os.path.exists(path):
        raise NotChecked("no rasdaemon database at %s" % path)
    try:
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            counts = {}
            if "mc_event" in tables:
                for kind, key in (("corrected", "ras_ce"), ("uncorrected", "ras_ue")):
                    row = db.execute("SELECT COALESCE(SUM(err_count), 0) FROM mc_event WHERE lower(err_type) LIKE ?",
                                     (kind + "%",)).fetchone()
                    counts[key] = int(row[0])
            if "mce_record" in tables:
                counts["ras_mce"] = int(db.execute("SELECT COUNT(*) FROM mce_record").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise NotChecked("rasdaemon database %s unreadable: %s" % (path, exc)) from exc
    return counts


def read_machine_checks(root: str) -> Record:
    """Machine-check exceptions the kernel took, summed over CPUs (the MCE row of /proc/interrupts)."""
    path = under(root, "/proc/interrupts")
    try:
        lines = _read(path).splitlines()
    except OSError as exc:
        raise NotChecked("%s unreadable: %s" % (path, exc.strerror or exc)) from exc
    for line in lines:
        label, _colon, rest = line.strip().partition(":")
        if label == "MCE":
            return {"mce_interrupts": sum(int(field) for field in rest.split() if field.isdigit())}
    raise NotChecked("no MCE row in %s (not an x86 kernel with machine-check support)" % path)


def read_nic_errors(root: str) -> Record:
    """rx_errors + tx_errors of every network interface but loopback, per interface."""
    counts = {}
    for stats in sorted(glob.glob(under(root, "/sys/class/net/*/statistics"))):
        name = os.path.basename(os.path.dirname(stats))
        if name == "lo":
            continue
        try:
            counts["nic_errors:" + name] = sum(_read_int(os.path.join(stats, f)) for f in ("rx_errors", "tx_errors"))
        except (OSError, ValueError):
            continue
    if not counts:
        raise NotChecked("no network interface statistics under %s" % under(root, "/sys/class/net"))
    return counts


def parse_psi(text: str) -> Record:
    """PSI file content ("some avg10=0.00 avg60=0.00 avg300=0.00 total=0", "full ...") as
    {"some": {"avg10": 0.0, ...}, "full": {...}}."""
    parsed: Record = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        values = {}
        for field in fields[1:]:
            key, _equals, value = field.partition("=")
            try:
                values[key] = float(value)
            except ValueError:
                continue
        parsed[fields[0]] = values
    return parsed


def read_memory_pressure(root: str) -> Record:
    path = under(root, "/proc/pressure/memory")
    try:
        parsed = parse_psi(_read(path))
    except OSError as exc:
        raise NotChecked("%s unreadable (kernel without PSI, or psi=0): %s" % (path, exc.strerror or exc)) from exc
    if "avg60" not in parsed.get("full", {}):
        raise NotChecked("%s has no 'full ... avg60=' line" % path)
    return parsed


def read_mounts(root: str) -> List[Record]:
    """Mounts of data filesystems: [{"mount", "fstype", "read_only"}]."""
    path = under(root, "/proc/mounts")
    try:
        lines = _read(path).splitlines()
    except OSError as exc:
        raise NotChecked("%s unreadable: %s" % (path, exc.strerror or exc)) from exc
    mounts = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[2] in DISK_FILESYSTEMS:
            mounts.append({"mount": fields[1].replace("\\040", " "), "fstype": fields[2],
                           "read_only": "ro" in fields[3].split(",")})
    return mounts


def read_disk_health(smartctl: Optional[str], run: Runner) -> Record:
    """Overall SMART health of every disk smartctl finds: {device: passed}."""
    if not smartctl:
        raise NotChecked("smartctl not installed (package smartmontools)")
    rc, out, err = run([smartctl, "--scan-open", "-j"])
    try:
        devices = json.loads(out).get("devices") or []
    except ValueError as exc:
        raise NotChecked("smartctl --scan-open gave no JSON (rc %s): %s" % (rc, (err or out).strip()[:200])) from exc
    health = {}
    for device in devices:
        name = device.get("name")
        argv = [smartctl, "-H", "-j"] + (["-d", device["type"]] if device.get("type") else []) + [name]
        _rc, out, _err = run(argv)
        try:
            status = json.loads(out).get("smart_status") or {}
        except ValueError:
            status = {}
        if "passed" in status:
            health[name] = bool(status["passed"])
    if not health:
        raise NotChecked("smartctl reported the health of no disk (%d found; virtual disks have no SMART)" % len(devices))
    return health


# ------------------------------------------------------------------ rates

def counter_rates(counters: Record, previous: Optional[Record], now: float, boot_id: Optional[str],
                  min_interval_s: float) -> Dict[str, Optional[float]]:
    """Per counter, increase per hour since the previous sample; None when there is no rate yet
    (no previous sample, a new counter, another boot, a counter that went down)."""
    rates: Dict[str, Optional[float]] = {}
    before = (previous or {}).get("counters") or {}
    same_boot = previous is not None and previous.get("boot_id") == boot_id
    then = (previous or {}).get("time")
    elapsed = now - float(then) if isinstance(then, (int, float)) else 0.0
    hours = max(elapsed, min_interval_s, 1.0) / 3600.0
    for key, value in counters.items():
        old = before.get(key)
        if not same_boot or elapsed <= 0 or not isinstance(old, (int, float)) or value < old:
            rates[key] = None
        else:
            rates[key] = round((value - old) / hours, 3)
    return rates


def keep_new_sample(previous: Optional[Record], now: float, boot_id: Optional[str], min_interval_s: float) -> bool:
    """Replace the previous sample only once it is old enough to measure a rate against (or
    belongs to another boot): frequent checks then still see a rate over min_interval_s."""
    if not previous or previous.get("boot_id") != boot_id:
        return True
    then = previous.get("time")
    return not isinstance(then, (int, float)) or now - float(then) >= min_interval_s


# ------------------------------------------------------------------ evaluation

def _rate_signal(name: str, keys_by_source: Dict[str, List[str]], counters: Record, rates: Record,
                 threshold: float, problems: Dict[str, str], unit: str) -> Record:
    """One counter-based signal: the worst rate among its sources' counters."""
    seen = [(source, key) for source, keys in keys_by_source.items() for key in keys if key in counters]
    if not seen:
        return {"status": "not_checked", "why": "; ".join(problems[s] for s in keys_by_source if s in problems)
                or "no source"}
    known = [(rates[key], source, key) for source, key in seen if rates.get(key) is not None]
    if not known:
        return {"status": "baseline", "sources": sorted({s for s, _k in seen}), "threshold": threshold,
                "value": sum(counters[k] for _s, k in seen),
                "why": "first sample (or counter reset): the rate is known from the next check"}
    rate, source, key = max(known)
    result = {"sources": sorted({s for s, _k in seen}), "value": counters[key], "counter": key,
              "rate_per_hour": rate, "threshold": threshold}
    if rate > threshold:
        result.update(status="crossed", why="%s: %s %s per hour (%s now), above the threshold of %s per hour"
                      % (name, rate, unit, counters[key], threshold))
    else:
        result.update(status="ok", why="%s %s per hour (threshold %s)" % (rate, unit, threshold))
    return result


def evaluate(readings: Record, problems: Dict[str, str], rates: Record, thresholds: Dict[str, float],
             previous: Optional[Record], watched_mounts: List[str]) -> Dict[str, Record]:
    """Every signal's status (ok, crossed, baseline, not_checked) with value, rate, threshold and why.

    readings: source name -> what it read (counters are merged in ``readings["counters"]``);
    problems: source name -> why it was not checked.
    """
    counters = readings.get("counters", {})
    signals: Dict[str, Record] = {}
    ras = {"edac": ["edac_ue"], "rasdaemon": ["ras_ue"]}
    signals["memory_uncorrected"] = _rate_signal("uncorrected memory errors", ras, counters, rates,
                                                 thresholds["memory_uncorrected_per_hour"], problems, "errors")
    ras = {"edac": ["edac_ce"], "rasdaemon": ["ras_ce"]}
    signals["memory_corrected"] = _rate_signal("corrected memory errors", ras, counters, rates,
                                               thresholds["memory_corrected_per_hour"], problems, "errors")
    signals["machine_check"] = _rate_signal("machine-check exceptions",
                                            {"interrupts": ["mce_interrupts"], "rasdaemon": ["ras_mce"]},
                                            counters, rates, thresholds["machine_check_per_hour"], problems, "events")
    nics = sorted(key for key in counters if key.startswith("nic_errors:"))
    signals["nic_errors"] = _rate_signal("NIC errors", {"nic": nics} if nics else {"nic": ["nic_errors:"]},
                                         counters, rates, thresholds["nic_errors_per_hour"], problems, "errors")

    if "psi" in readings:
        full = readings["psi"]["full"]["avg60"]
        threshold = thresholds["memory_pressure_full_avg60"]
        signals["memory_pressure"] = {"value": full, "threshold": threshold, "sources": ["psi"],
                                      "status": "crossed" if full > threshold else "ok",
                                      "why": ("memory pressure: every task stalled on memory %s%% of the last 60 s, "
                                              "above the threshold of %s%%" if full > threshold else
                                              "memory 'full' pressure %s%% over 60 s (threshold %s%%)") % (full, threshold)}
    else:
        signals["memory_pressure"] = {"status": "not_checked", "why": problems.get("psi", "no source")}

    if "mounts" in readings:
        was_writable = set((previous or {}).get("writable_mounts") or [])
        gone = sorted(m["mount"] for m in readings["mounts"]
                      if m["read_only"] and (m["mount"] in watched_mounts or m["mount"] in was_writable))
        signals["readonly_filesystem"] = {
            "value": gone, "sources": ["mounts"], "status": "crossed" if gone else "ok",
            "why": ("filesystem(s) read-only: %s (a disk or filesystem error makes the kernel remount read-only)"
                    % ", ".join(gone)) if gone else "watched filesystems writable"}
    else:
        signals["readonly_filesystem"] = {"status": "not_checked", "why": problems.get("mounts", "no source")}

    if "disks" in readings:
        failing = sorted(device for device, passed in readings["disks"].items() if not passed)
        signals["disk_health"] = {"value": failing, "sources": ["smartctl"], "status": "crossed" if failing else "ok",
                                  "why": ("SMART overall health FAILED: %s" % ", ".join(failing)) if failing else
                                  "SMART health passed on %s" % ", ".join(sorted(readings["disks"]))}
    else:
        signals["disk_health"] = {"status": "not_checked", "why": problems.get("smartctl", "no source")}

    if "libvirt" in readings:
        error = readings["libvirt"]
        signals["libvirt"] = {"sources": ["libvirt"], "status": "crossed" if error else "ok",
                              "why": ("libvirt not answering: %s" % error) if error else "libvirt answered"}
    else:
        signals["libvirt"] = {"status": "not_checked", "why": problems.get("libvirt", "no source")}
    return signals


# ------------------------------------------------------------------ the sample store

HEALTH_DIR = "health"


def sample_path(state_path: str, host: str) -> str:
    """Where host's previous sample is kept: <storage>/.virtfleet/health/<host>.json."""
    if not host or "/" in host or host.startswith("."):
        raise StateError("invalid host name for a health sample: %r" % host)
    return os.path.join(state_path, HEALTH_DIR, host + ".json")


def load_sample(state_path: str, host: str) -> Optional[Record]:
    sample = read_json(sample_path(state_path, host))
    return sample if isinstance(sample, dict) else None


def save_sample(state_path: str, host: str, sample: Record) -> None:
    """Written atomically, the directory group-writable like the rest of the shared state (the
    hosts of a cluster may log in as different users sharing a group)."""
    path = sample_path(state_path, host)
    make_state_dirs(os.path.dirname(path))
    write_json_atomic(path, sample)


def seen_path(state_path: str, host: str) -> str:
    """When host last answered a check: <storage>/.virtfleet/health/<host>.seen. Kept apart from
    the sample, which is rewritten only once per interval (rates need a span)."""
    return sample_path(state_path, host)[:-len(".json")] + ".seen"


def record_seen(state_path: str, host: str, now: float) -> None:
    path = seen_path(state_path, host)
    make_state_dirs(os.path.dirname(path))
    write_json_atomic(path, {"time": now})


def last_seen(state_path: str, hosts: List[str]) -> Dict[str, Optional[float]]:
    """host -> when it last answered a check (None: never, or unreadable)."""
    seen: Dict[str, Optional[float]] = {}
    for host in hosts:
        try:
            record = read_json(seen_path(state_path, host))
        except StateError:
            record = None
        when = record.get("time") if isinstance(record, dict) else None
        seen[host] = float(when) if isinstance(when, (int, float)) else None
    return seen


# ------------------------------------------------------------------ one check

def gather(root: str, smartctl: Optional[str], run: Runner, probe: Optional[Callable[[], Optional[str]]],
           libvirt_problem: Optional[str]) -> Tuple[Record, Dict[str, str]]:
    """Reads every source: (readings, problems). Counters of every source are merged into
    readings["counters"]; a source that is not there leaves its reason in problems."""
    readings: Record = {"counters": {}}
    problems: Dict[str, str] = {}
    for source, reader in (("edac", read_edac), ("rasdaemon", read_rasdaemon), ("interrupts", read_machine_checks),
                           ("nic", read_nic_errors)):
        try:
            readings["counters"].update(reader(root))
        except NotChecked as exc:
            problems[source] = str(exc)
    for source, key, reader in (("psi", "psi", read_memory_pressure), ("mounts", "mounts", read_mounts)):
        try:
            readings[key] = reader(root)
        except NotChecked as exc:
            problems[source] = str(exc)
    try:
        readings["disks"] = read_disk_health(smartctl, run)
    except NotChecked as exc:
        problems["smartctl"] = str(exc)
    if probe is None:
        problems["libvirt"] = libvirt_problem or "libvirt not probed"
    else:
        readings["libvirt"] = probe()
    return readings, problems


def read_boot_id(root: str) -> Optional[str]:
    try:
        return _read(under(root, "/proc/sys/kernel/random/boot_id")).strip() or None
    except OSError:
        return None


def check(readings: Record, problems: Dict[str, str], previous: Optional[Record], now: float,
          boot_id: Optional[str], thresholds: Dict[str, float], min_interval_s: float,
          watched_mounts: List[str]) -> Tuple[Record, Record]:
    """The health result and the sample to keep for the next check: (result, sample)."""
    counters = readings.get("counters", {})
    rates = counter_rates(counters, previous, now, boot_id, min_interval_s)
    signals = evaluate(readings, problems, rates, thresholds, previous, watched_mounts)
    crossed = [dict(signals[name], signal=name) for name in SIGNALS if signals[name]["status"] == "crossed"]
    sample = {"time": now, "boot_id": boot_id, "counters": counters,
              "writable_mounts": sorted(m["mount"] for m in readings.get("mounts", []) if not m["read_only"])}
    result = {
        "failing": bool(crossed),
        "crossed": crossed,
        "worst": crossed[0]["signal"] if crossed else None,
        "signals": signals,
        "not_checked": [name for name in SIGNALS if signals[name]["status"] == "not_checked"],
        "baseline": [name for name in SIGNALS if signals[name]["status"] == "baseline"],
        "previous_sample_age_s": (round(now - float(previous["time"]), 1)
                                  if isinstance((previous or {}).get("time"), (int, float)) else None),
        "rates": {key: value for key, value in rates.items() if value is not None},
    }
    return result, sample


def summary(host: str, result: Record) -> str:
    if result["failing"]:
        text = "%s FAILING: %s" % (host, "; ".join(c["why"] for c in result["crossed"]))
    else:
        text = "%s: no threshold crossed" % host
    if result["not_checked"]:
        text += "; not checked: %s" % ", ".join(result["not_checked"])
    if result["baseline"]:
        text += "; no rate yet: %s" % ", ".join(result["baseline"])
    return text
