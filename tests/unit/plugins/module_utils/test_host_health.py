"""host_health: the signals read under a root, rates against the previous sample, thresholds,
and sources that are missing (never healthy). Real files under tmp_path stand for sysfs and
procfs; smartctl is a small fake runner (a failing disk cannot be made on demand)."""
import json
import os
import sqlite3

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import host_health as hh

T = dict(hh.DEFAULT_THRESHOLDS)
HOUR = 3600.0


def write(root, path, text):
    full = os.path.join(str(root), path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as handle:
        handle.write(text)


def edac(root, ce, ue, controllers=1):
    for index in range(controllers):
        write(root, "/sys/devices/system/edac/mc/mc%d/ce_count" % index, "%d\n" % ce)
        write(root, "/sys/devices/system/edac/mc/mc%d/ue_count" % index, "%d\n" % ue)


def no_smartctl(_argv):
    raise AssertionError("smartctl must not run when it is not installed")


def run_check(root, previous=None, now=1000.0, boot="b1", thresholds=None, probe=None, smartctl=None, run=no_smartctl,
              min_interval=300, watched=("/",)):
    readings, problems = hh.gather(str(root), smartctl, run, probe, "not probed in this test")
    return hh.check(readings, problems, previous, now, boot, dict(T, **(thresholds or {})), min_interval, list(watched))


# --- missing sources -------------------------------------------------------------------------

def test_empty_root_checks_nothing_and_calls_nothing_healthy(tmp_path):
    result, _sample = run_check(tmp_path / "missing")
    assert not result["failing"]
    assert sorted(result["not_checked"]) == sorted(hh.SIGNALS)
    assert all(s["status"] == "not_checked" for s in result["signals"].values())
    assert "no EDAC memory controller" in result["signals"]["memory_corrected"]["why"]
    assert "not checked: " in hh.summary("hv1", result)


# --- memory errors: rates, not raw counters --------------------------------------------------

def test_first_sample_is_a_baseline_not_a_verdict(tmp_path):
    edac(tmp_path, ce=10000, ue=3)
    result, sample = run_check(tmp_path)
    assert not result["failing"]
    assert result["signals"]["memory_corrected"]["status"] == "baseline"
    assert "memory_corrected" in result["baseline"] and "memory_uncorrected" in result["baseline"]
    assert sample["counters"] == {"edac_ce": 10000, "edac_ue": 3}


def test_corrected_error_rate_above_threshold_crosses_and_says_why(tmp_path):
    edac(tmp_path, ce=5, ue=0, controllers=2)
    _r, previous = run_check(tmp_path, now=0.0)
    edac(tmp_path, ce=105, ue=0, controllers=2)  # +200 over two controllers in one hour
    result, _s = run_check(tmp_path, previous=previous, now=HOUR)
    signal = result["signals"]["memory_corrected"]
    assert signal["status"] == "crossed" and signal["rate_per_hour"] == 200.0
    assert signal["value"] == 210 and signal["threshold"] == 50.0
    assert result["failing"] and result["worst"] == "memory_corrected"
    assert "200.0 errors per hour" in signal["why"] and "threshold of 50.0" in signal["why"]
    assert result["signals"]["memory_uncorrected"]["status"] == "ok"


def test_slow_corrected_errors_stay_ok_and_threshold_is_an_option(tmp_path):
    edac(tmp_path, ce=0, ue=0)
    _r, previous = run_check(tmp_path, now=0.0)
    edac(tmp_path, ce=40, ue=0)
    result, _s = run_check(tmp_path, previous=previous, now=HOUR)
    assert result["signals"]["memory_corrected"]["status"] == "ok"
    stricter, _s = run_check(tmp_path, previous=previous, now=HOUR, thresholds={"memory_corrected_per_hour": 39})
    assert stricter["signals"]["memory_corrected"]["status"] == "crossed"


def test_any_new_uncorrected_error_crosses_and_is_the_worst_signal(tmp_path):
    edac(tmp_path, ce=0, ue=2)
    _r, previous = run_check(tmp_path, now=0.0)
    edac(tmp_path, ce=1000, ue=3)
    result, _s = run_check(tmp_path, previous=previous, now=HOUR)
    assert [c["signal"] for c in result["crossed"]] == ["memory_uncorrected", "memory_corrected"]
    assert result["worst"] == "memory_uncorrected"


def test_short_interval_is_measured_as_min_interval(tmp_path):
    """One error between two checks a second apart is 12 per hour over 300 s, not 3600."""
    edac(tmp_path, ce=0, ue=0)
    _r, previous = run_check(tmp_path, now=0.0)
    edac(tmp_path, ce=1, ue=0)
    result, _s = run_check(tmp_path, previous=previous, now=1.0)
    assert result["signals"]["memory_corrected"]["rate_per_hour"] == 12.0
    assert result["signals"]["memory_corrected"]["status"] == "ok"


def test_previous_sample_is_kept_until_it_is_min_interval_old():
    previous = {"time": 0.0, "boot_id": "b1"}
    assert not hh.keep_new_sample(previous, 299.0, "b1", 300)
    assert hh.keep_new_sample(previous, 300.0, "b1", 300)
    assert hh.keep_new_sample(previous, 1.0, "b2", 300)  # another boot: counters restarted
    assert hh.keep_new_sample(None, 1.0, "b1", 300)


def test_reboot_or_counter_reset_gives_a_baseline_not_a_negative_rate(tmp_path):
    edac(tmp_path, ce=500, ue=0)
    _r, previous = run_check(tmp_path, now=0.0)
    edac(tmp_path, ce=2, ue=0)
    result, _s = run_check(tmp_path, previous=previous, now=HOUR)
    assert result["signals"]["memory_corrected"]["status"] == "baseline"
    edac(tmp_path, ce=600, ue=0)
    other_boot, _s = run_check(tmp_path, previous=previous, now=HOUR, boot="b2")
    assert other_boot["signals"]["memory_corrected"]["status"] == "baseline"


def test_rasdaemon_database_counts_memory_and_machine_check_events(tmp_path):
    path = os.path.join(str(tmp_path), hh.RASDAEMON_DB)
    os.makedirs(os.path.dirname(path))
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE mc_event (id INTEGER PRIMARY KEY, err_count INTEGER, err_type TEXT)")
    db.execute("CREATE TABLE mce_record (id INTEGER PRIMARY KEY, bank INTEGER)")
    db.executemany("INSERT INTO mc_event (err_count, err_type) VALUES (?, ?)",
                   [(3, "Corrected"), (4, "Corrected"), (1, "Uncorrected")])
    db.execute("INSERT INTO mce_record (bank) VALUES (1)")
    db.commit()
    assert hh.read_rasdaemon(str(tmp_path)) == {"ras_ce": 7, "ras_ue": 1, "ras_mce": 1}
    _r, previous = run_check(tmp_path, now=0.0)
    db.execute("INSERT INTO mce_record (bank) VALUES (2)")
    db.commit()
    db.close()
    result, _s = run_check(tmp_path, previous=previous, now=HOUR)
    assert result["signals"]["machine_check"]["status"] == "crossed"
    assert result["signals"]["machine_check"]["counter"] == "ras_mce"
    assert result["signals"]["memory_corrected"]["sources"] == ["rasdaemon"]


def test_machine_checks_from_proc_interrupts(tmp_path):
    write(tmp_path, "/proc/interrupts", "           CPU0       CPU1\n  0:   10   0   IO-APIC   2-edge   timer\n"
                                        " MCE:          1          2   Machine check exceptions\n"
                                        " MCP:         40         40   Machine check polls\n")
    assert hh.read_machine_checks(str(tmp_path)) == {"mce_interrupts": 3}
    _r, previous = run_check(tmp_path, now=0.0)
    assert run_check(tmp_path, previous=previous, now=HOUR)[0]["signals"]["machine_check"]["status"] == "ok"
    write(tmp_path, "/proc/interrupts", " MCE:          2          2   Machine check exceptions\n")
    assert run_check(tmp_path, previous=previous, now=HOUR)[0]["signals"]["machine_check"]["status"] == "crossed"


def test_nic_errors_rate_of_the_worst_interface_loopback_ignored(tmp_path):
    for nic, errors in (("lo", 0), ("eth0", 0), ("eth1", 5)):
        write(tmp_path, "/sys/class/net/%s/statistics/rx_errors" % nic, "%d\n" % errors)
        write(tmp_path, "/sys/class/net/%s/statistics/tx_errors" % nic, "0\n")
    _r, previous = run_check(tmp_path, now=0.0)
    assert set(previous["counters"]) == {"nic_errors:eth0", "nic_errors:eth1"}
    write(tmp_path, "/sys/class/net/eth1/statistics/tx_errors", "700\n")
    write(tmp_path, "/sys/class/net/lo/statistics/rx_errors", "99999\n")
    signal = run_check(tmp_path, previous=previous, now=HOUR)[0]["signals"]["nic_errors"]
    assert signal["status"] == "crossed" and signal["counter"] == "nic_errors:eth1" and signal["rate_per_hour"] == 700.0


# --- levels and states -----------------------------------------------------------------------

PSI = "some avg10=1.50 avg60=20.00 avg300=3.00 total=123\nfull avg10=0.50 avg60=%s avg300=1.00 total=45\n"


def test_psi_parsing():
    parsed = hh.parse_psi(PSI % "2.25")
    assert parsed["some"]["avg60"] == 20.0 and parsed["full"]["avg60"] == 2.25 and parsed["full"]["total"] == 45.0


def test_memory_pressure_full_avg60_against_its_threshold(tmp_path):
    write(tmp_path, "/proc/pressure/memory", PSI % "2.25")
    assert run_check(tmp_path)[0]["signals"]["memory_pressure"]["status"] == "ok"  # "some" 20% is not a stall
    write(tmp_path, "/proc/pressure/memory", PSI % "35.10")
    result, _s = run_check(tmp_path)
    assert result["signals"]["memory_pressure"]["status"] == "crossed" and "35.1%" in result["signals"]["memory_pressure"]["why"]


def test_psi_without_full_line_is_not_checked(tmp_path):
    write(tmp_path, "/proc/pressure/memory", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert run_check(tmp_path)[0]["signals"]["memory_pressure"]["status"] == "not_checked"


MOUNTS = ("/dev/sda1 / ext4 %s,relatime,errors=remount-ro 0 0\n"
          "/dev/sdb1 /srv/data xfs %s,noatime 0 0\n"
          "/dev/sr0 /media/cdrom iso9660 ro 0 0\n"
          "proc /proc proc rw,nosuid 0 0\n")


def test_watched_filesystem_read_only_crosses(tmp_path):
    write(tmp_path, "/proc/mounts", MOUNTS % ("rw", "rw"))
    result, sample = run_check(tmp_path)
    assert result["signals"]["readonly_filesystem"]["status"] == "ok"  # a read-only CD-ROM is normal
    assert sample["writable_mounts"] == ["/", "/srv/data"]
    write(tmp_path, "/proc/mounts", MOUNTS % ("ro", "rw"))
    signal = run_check(tmp_path)[0]["signals"]["readonly_filesystem"]
    assert signal["status"] == "crossed" and signal["value"] == ["/"]


def test_other_filesystem_crosses_only_when_it_went_read_only(tmp_path):
    write(tmp_path, "/proc/mounts", MOUNTS % ("rw", "ro"))
    result, previous = run_check(tmp_path)
    assert result["signals"]["readonly_filesystem"]["status"] == "ok"  # /srv/data was mounted read-only on purpose
    write(tmp_path, "/proc/mounts", MOUNTS % ("rw", "rw"))
    _r, previous = run_check(tmp_path)
    write(tmp_path, "/proc/mounts", MOUNTS % ("rw", "ro"))
    signal = run_check(tmp_path, previous=previous)[0]["signals"]["readonly_filesystem"]
    assert signal["status"] == "crossed" and signal["value"] == ["/srv/data"]


def smart_runner(health):
    calls = []

    def run(argv):
        calls.append(argv)
        if "--scan-open" in argv:
            return 0, json.dumps({"devices": [{"name": d, "type": "sat"} for d in health]}), ""
        device = argv[-1]
        return (8 if not health[device] else 0), json.dumps({"smart_status": {"passed": health[device]}}), ""
    run.calls = calls
    return run


def test_disk_health_failed_crosses_naming_the_disk(tmp_path):
    run = smart_runner({"/dev/sda": True, "/dev/sdb": False})
    signal = run_check(tmp_path, smartctl="/usr/sbin/smartctl", run=run)[0]["signals"]["disk_health"]
    assert signal["status"] == "crossed" and signal["value"] == ["/dev/sdb"]
    assert ["/usr/sbin/smartctl", "-H", "-j", "-d", "sat", "/dev/sda"] in run.calls


def test_disks_without_smart_are_not_checked(tmp_path):
    signal = run_check(tmp_path, smartctl="smartctl", run=smart_runner({}))[0]["signals"]["disk_health"]
    assert signal["status"] == "not_checked" and "no disk" in signal["why"]
    assert run_check(tmp_path)[0]["signals"]["disk_health"]["why"].startswith("smartctl not installed")


def test_libvirt_not_answering_crosses(tmp_path):
    result, _s = run_check(tmp_path, probe=lambda: "cannot connect to qemu:///system: no answer within 15 s")
    assert result["signals"]["libvirt"]["status"] == "crossed" and "no answer" in result["signals"]["libvirt"]["why"]
    assert run_check(tmp_path, probe=lambda: None)[0]["signals"]["libvirt"]["status"] == "ok"
    assert run_check(tmp_path)[0]["signals"]["libvirt"]["status"] == "not_checked"


# --- the sample store ------------------------------------------------------------------------

def test_sample_round_trip_in_the_state_directory(tmp_path):
    state = str(tmp_path / ".virtfleet")
    os.makedirs(state)
    assert hh.load_sample(state, "hv1") is None
    hh.save_sample(state, "hv1", {"time": 1.0, "counters": {"edac_ce": 1}})
    assert hh.load_sample(state, "hv1")["counters"] == {"edac_ce": 1}
    assert os.path.exists(os.path.join(state, "health", "hv1.json"))
    with pytest.raises(hh.StateError):
        hh.sample_path(state, "../escape")
