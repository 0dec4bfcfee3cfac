"""Pure parts of migration.py: stall watchdog, timeout scaling, option mapping, messages."""
import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import migration as m
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration import (
    MigrationOptions, MigrationProgress, StallDetector, completion_timeout,
    migration_flags_and_params)

MIB = 1024 * 1024
TOTAL = 128 * MIB


def sample(iteration, remaining, total=TOTAL):
    return {"type": 2, "memory_iteration": iteration, "data_remaining": remaining,
            "data_total": total, "data_processed": total - remaining}


def feed(detector, samples):
    """Returns the index of the first sample that reports a stall, or None."""
    for index, stats in enumerate(samples):
        if detector.observe(stats):
            return index
    return None


# --- stall watchdog on recorded sequences ---------------------------------------------

# An idle 128 MiB guest (recorded on the lab): one pass, then a small second pass. Converges.
IDLE_GUEST = [
    {"type": 2},  # job exists, QEMU not started yet: no counters
    sample(0, 0, 0),
    sample(1, 133574656), sample(1, 91443200), sample(1, 43720704), sample(1, 17235968),
    sample(1, 397312), sample(2, 217088),
]

# A guest dirtying memory as fast as it is sent: each pass ends around 40 MiB remaining.
NEVER_CONVERGES = [sample(1, 120 * MIB), sample(1, 60 * MIB), sample(1, 41 * MIB)] + [
    sample(i, r * MIB) for i in range(2, 20) for r in (48, 44, 42)]

# Slow but converging: every pass ends a little lower, even if passes take long.
SLOW_BUT_CONVERGING = [sample(i, (100 - i) * MIB) for i in range(1, 40) for _repeat in range(5)]

# Recorded on the dev lab: TCG guest rewriting 48 MiB in a loop (~9.8 MiB/s dirty), migration
# capped at 10 MiB/s: (memory_iteration, data_remaining) every 0.5 s, data_total 134750208.
# Each pass starts again near 47-50 MiB; the end-of-pass values are chance (6.0 down to 2.2 MiB).
RECORDED_DIRTY_GUEST = [
    (1, 130621440), (1, 125378560), (1, 120131584), (1, 112738304),
    (1, 106852352), (1, 96636928), (1, 91275264), (1, 84430848),
    (1, 79187968), (1, 73945088), (1, 68702208), (1, 63459328),
    (1, 57167872), (1, 50876416), (1, 45633536), (1, 40382464),
    (1, 35139584), (1, 30146560), (1, 24764416), (1, 16662528),
    (1, 11419648), (1, 6045696), (2, 52318208), (2, 47984640),
    (2, 42733568), (2, 37490688), (2, 32247808), (2, 27004928),
    (2, 21762048), (2, 16519168), (2, 11276288), (2, 6033408),
    (3, 51146752), (3, 45899776), (3, 40648704), (3, 35405824),
    (3, 30162944), (3, 24920064), (3, 19677184), (3, 14434304),
    (3, 10240000), (3, 4997120), (4, 50110464), (4, 44863488),
    (4, 39620608), (4, 34369536), (4, 29126656), (4, 23883776),
    (4, 18640896), (4, 13398016), (4, 8155136), (4, 3960832),
    (5, 49422336), (5, 44179456), (5, 38932480), (5, 33681408),
    (5, 28438528), (5, 23195648), (5, 17952768), (5, 12709888),
    (5, 7467008), (5, 2224128), (6, 47996928), (6, 42754048),
    (6, 37507072), (6, 31207424), (6, 24915968), (6, 19673088),
    (6, 14430208), (6, 10235904), (6, 3944448), (7, 49061888),
    (7, 43819008), (7, 39624704), (7, 34365440), (7, 29114368),
    (7, 23871488), (7, 18628608), (7, 13385728), (7, 8142848),
    (7, 2899968), (8, 49057792),
]


def test_recorded_dirty_guest_stalls_at_the_first_sample_of_pass_8_with_limit_2():
    detector = StallDetector(limit=2)
    samples = [sample(i, r, 134750208) for i, r in RECORDED_DIRTY_GUEST]
    index = feed(detector, samples)
    # Pass starts (MiB): 124.6, 49.9, 48.8, 47.8, 47.1, 45.8, 46.8, 46.8: pass 6 set the low,
    # passes 7 and 8 started higher: stalled at the first sample of pass 8.
    assert samples[index]["memory_iteration"] == 8 and index == len(samples) - 1
    assert detector.low_mark == dict(reversed(RECORDED_DIRTY_GUEST))[6]  # first sample of pass 6


def test_recorded_dirty_guest_is_not_stalled_with_the_default_limit():
    samples = [sample(i, r, 134750208) for i, r in RECORDED_DIRTY_GUEST]
    assert feed(StallDetector(), samples) is None


def test_idle_guest_never_stalls():
    assert feed(StallDetector(limit=2), IDLE_GUEST) is None


def test_never_converging_guest_stalls_after_limit_iterations_without_new_low():
    detector = StallDetector(limit=5)
    index = feed(detector, NEVER_CONVERGES)
    assert index is not None
    # Pass starts: 120 MiB, then 48 MiB every time. The low mark (48 MiB) was set by pass 2;
    # the stall fires on the first sample of pass 7, i.e. after 5 passes without a new low.
    assert NEVER_CONVERGES[index]["memory_iteration"] == 7
    assert detector.low_mark == 48 * MIB
    assert detector.iterations_without_progress == 5


def test_slow_progress_is_not_a_stall_however_long_it_takes():
    # Wall-clock time is not an input at all: 195 samples, each pass a new low.
    assert feed(StallDetector(limit=1), SLOW_BUT_CONVERGING) is None


def test_new_low_at_a_pass_start_resets_the_count():
    detector = StallDetector(limit=3)
    seq = [sample(1, 50 * MIB), sample(2, 60 * MIB), sample(3, 60 * MIB),
           sample(4, 49 * MIB),  # pass 4 starts lower than any pass before: progress
           sample(5, 55 * MIB), sample(6, 55 * MIB)]
    assert feed(detector, seq) is None
    assert detector.low_mark_iteration == 4 and detector.iterations_without_progress == 2
    assert detector.observe(sample(7, 55 * MIB)) is True


def test_lows_inside_a_pass_do_not_count():
    # End-of-pass values are chance (where the sample lands); a near-zero one must not
    # become a low mark that a converging migration could never beat again.
    detector = StallDetector(limit=2)
    seq = [sample(1, 100 * MIB), sample(1, 20 * 1024),
           sample(2, 40 * MIB), sample(2, 5 * 1024),
           sample(3, 30 * MIB), sample(4, 20 * MIB), sample(5, 10 * MIB)]
    assert feed(detector, seq) is None
    assert detector.low_mark == 10 * MIB


def test_a_zero_at_a_pass_boundary_is_not_a_low_mark():
    # QEMU shows data_remaining 0 for an instant between passes; taken as a low mark it would
    # make every later pass look like "no progress" and abort a converging migration.
    detector = StallDetector(limit=2)
    seq = [sample(1, 40 * MIB), sample(1, 0), sample(2, 30 * MIB), sample(2, 0),
           sample(3, 20 * MIB), sample(4, 10 * MIB), sample(5, 5 * MIB)]
    assert feed(detector, seq) is None
    assert detector.low_mark == 5 * MIB


def test_samples_without_counters_are_ignored():
    detector = StallDetector(limit=1)
    for stats in ({}, {"type": 2}, {"memory_iteration": 5, "data_remaining": 1},  # no total
                  {"data_remaining": 10, "data_total": 100}):
        assert detector.observe(stats) is False
    assert detector.low_mark is None


def test_stall_limit_must_be_positive():
    with pytest.raises(ValueError):
        StallDetector(limit=0)


# --- timeout scaled by memory ---------------------------------------------------------

def test_timeout_scales_800s_per_gib_with_a_minimum():
    assert completion_timeout(4 * 1024 * MIB) == 3200
    assert completion_timeout(128 * MIB) == m.DEFAULT_MIN_TIMEOUT  # 100 s < minimum
    assert completion_timeout(1024 * MIB, MigrationOptions(min_timeout=10)) == 800


def test_timeout_counts_copied_disks_and_explicit_timeout_wins():
    assert completion_timeout(1024 * MIB, disk_bytes=1024 * MIB) == 1600
    assert completion_timeout(64 * 1024 * MIB, MigrationOptions(timeout=30)) == 30
    assert completion_timeout(512 * MIB, MigrationOptions(timeout_per_gib=100, min_timeout=1)) == 50


# --- options -> flags and params ------------------------------------------------------

def test_default_flags_are_novas_and_no_params():
    flags, params = migration_flags_and_params(MigrationOptions())
    assert flags == (m.VIR_MIGRATE_LIVE | m.VIR_MIGRATE_PEER2PEER | m.VIR_MIGRATE_PERSIST_DEST
                     | m.VIR_MIGRATE_UNDEFINE_SOURCE)
    assert params == {}
    assert not flags & m.VIR_MIGRATE_POSTCOPY  # never by default


def test_every_option_maps_to_its_flag_or_param():
    options = MigrationOptions(bandwidth_mib=200, auto_converge=True, auto_converge_initial=20,
                               auto_converge_increment=10, postcopy=True,
                               parallel_connections=4, copy_storage=True,
                               migrate_disks=["vda"], migrate_uri="tcp://10.0.0.2",
                               undefine_source=False, persist_dest=False)
    flags, params = migration_flags_and_params(options)
    assert flags & m.VIR_MIGRATE_AUTO_CONVERGE
    assert flags & m.VIR_MIGRATE_POSTCOPY
    assert flags & m.VIR_MIGRATE_PARALLEL
    assert flags & m.VIR_MIGRATE_NON_SHARED_DISK
    assert not flags & m.VIR_MIGRATE_UNDEFINE_SOURCE
    assert not flags & m.VIR_MIGRATE_PERSIST_DEST
    assert params == {"bandwidth": 200, "auto_converge.initial": 20,
                      "auto_converge.increment": 10, "parallel.connections": 4,
                      "migrate_disks": ["vda"], "migrate_uri": "tcp://10.0.0.2"}


@pytest.mark.parametrize("kwargs, words", [
    ({"peer2peer": False}, "peer2peer"),
    ({"persist_dest": False}, "undefine_source without persist_dest"),
    ({"auto_converge_initial": 20}, "needs auto_converge"),
    ({"auto_converge": True, "auto_converge_increment": 150}, "percentage"),
    ({"migrate_disks": ["vda"]}, "needs copy_storage"),
    ({"parallel_connections": 0}, "parallel_connections"),
    ({"stall_iterations": 0}, "stall_iterations"),
    ({"bogus": 1}, "unknown migration option"),
])
def test_invalid_options_are_refused_with_a_reason(kwargs, words):
    with pytest.raises(ValueError, match=words):
        MigrationOptions(**kwargs)


def test_from_params_ignores_unrelated_keys():
    options = MigrationOptions.from_params({"guest": "x", "bandwidth_mib": 5, "postcopy": None})
    assert options.bandwidth_mib == 5 and options.postcopy is False


def test_flag_values_match_libvirt():
    libvirt = pytest.importorskip("libvirt")
    for name in ("VIR_MIGRATE_LIVE", "VIR_MIGRATE_PEER2PEER", "VIR_MIGRATE_PERSIST_DEST",
                 "VIR_MIGRATE_UNDEFINE_SOURCE", "VIR_MIGRATE_NON_SHARED_DISK",
                 "VIR_MIGRATE_AUTO_CONVERGE", "VIR_MIGRATE_POSTCOPY", "VIR_MIGRATE_PARALLEL",
                 "VIR_DOMAIN_JOB_NONE", "VIR_DOMAIN_JOB_STATS_COMPLETED", "VIR_DOMAIN_RUNNING",
                 "VIR_DOMAIN_PAUSED", "VIR_DOMAIN_PAUSED_POSTCOPY",
                 "VIR_DOMAIN_PAUSED_POSTCOPY_FAILED", "VIR_ERR_NO_DOMAIN"):
        assert getattr(m, name) == getattr(libvirt, name), name


# --- progress and reporting -----------------------------------------------------------

def test_progress_line_reads_like_the_operator_wants():
    p = MigrationProgress("a1-g1", "hv-a1", "hv-a2", "precopy",
                          sample(1, int(TOTAL * 0.36)), elapsed=1.0)
    assert str(p) == "a1-g1 -> hv-a2: 64% of 128 MiB"
    p = MigrationProgress("a1-g1", "hv-a1", "hv-a2", "precopy", sample(3, 0))
    assert str(p) == "a1-g1 -> hv-a2: 100% of 128 MiB, pass 3"
    assert str(MigrationProgress("a1-g1", "hv-a1", "hv-a2", "setup")) == "a1-g1 -> hv-a2: setup"


def test_dirty_rate_is_converted_from_pages_to_bytes():
    assert m.dirty_rate_bytes({"memory_dirty_rate": 100, "memory_page_size": 4096}) == 409600
    assert m.dirty_rate_bytes({}) is None


def test_completed_stats_summary_names_the_figures():
    raw = {"downtime": 11, "time_elapsed": 397, "setup_time": 1, "memory_processed": 725781,
           "data_total": TOTAL, "memory_iteration": 2, "memory_dirty_rate": 3,
           "memory_page_size": 4096, "memory_bps": 35336739}
    summary = m.completed_stats_summary(raw)
    assert summary["downtime_ms"] == 11 and summary["total_time_ms"] == 397
    assert summary["setup_time_ms"] == 1 and summary["memory_iterations"] == 2
    assert summary["memory_transferred_bytes"] == 725781 and summary["dirty_rate_bps"] == 12288


def test_host_label_never_leaks_the_uri():
    assert m.host_label("qemu+ssh://root@hv-1.example/system?keyfile=/secret/id") == "hv-1.example"
    assert m.host_label("qemu+tcp://127.0.1.12/session") == "127.0.1.12"
    assert m.host_label("qemu:///system") == "localhost"


def test_stall_suggestion_names_the_remedies():
    text = m._suggestion(MigrationOptions(), "stalled")
    assert text == "; try: enable auto_converge, allow post-copy or set max_downtime_ms"
    text = m._suggestion(MigrationOptions(auto_converge=True, bandwidth_mib=10), "stalled")
    assert text == "; try: allow post-copy, set max_downtime_ms or raise bandwidth_mib"


def test_known_libvirt_errors_get_a_hint():
    assert "machine-id" in m._hint_for("Attempt to migrate guest to the same host 1234")
    text = "unable to execute QEMU command 'migrate-set-capabilities': Postcopy is not supported"
    assert "userfaultfd" in m._hint_for(text)
    assert m._hint_for("something else") is None


def test_migration_error_knows_where_the_guest_is():
    error = m.MigrationError("web-3 still running on hv-1: ...", guest="web-3", source="hv-1",
                             destination="hv-2", reason="stalled", location="source",
                             running_on="hv-1")
    assert not error.moved
    assert error.as_dict()["running_on"] == "hv-1"
