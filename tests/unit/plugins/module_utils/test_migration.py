"""Pure parts of migration.py: stall watchdog, timeout scaling, option mapping, messages; and
migrate_guest() against small fakes of libvirt's connection and domain objects."""
import threading

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_connection
from ansible_collections.virtfleet.cluster.plugins.module_utils import migration
from ansible_collections.virtfleet.cluster.plugins.module_utils import migration_options
from ansible_collections.virtfleet.cluster.plugins.module_utils import migration_recovery
from ansible_collections.virtfleet.cluster.plugins.module_utils import migration_watchdog
from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    VIR_DOMAIN_JOB_STATS_COMPLETED, VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_POSTCOPY, VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,
    VIR_DOMAIN_RUNNING, VIR_ERR_NO_DOMAIN, VIR_MIGRATE_AUTO_CONVERGE, VIR_MIGRATE_LIVE, VIR_MIGRATE_NON_SHARED_DISK,
    VIR_MIGRATE_PARALLEL, VIR_MIGRATE_PEER2PEER, VIR_MIGRATE_PERSIST_DEST, VIR_MIGRATE_POSTCOPY,
    VIR_MIGRATE_UNDEFINE_SOURCE)
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_options import (
    MigrationOptions, completion_timeout, migration_flags_and_params)
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_recovery import MigrationError
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_watchdog import MigrationProgress, StallDetector

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
    assert completion_timeout(128 * MIB) == migration_options.DEFAULT_MIN_TIMEOUT  # 100 s < minimum
    assert completion_timeout(1024 * MIB, MigrationOptions(min_timeout=10)) == 800


def test_timeout_counts_copied_disks_and_explicit_timeout_wins():
    assert completion_timeout(1024 * MIB, disk_bytes=1024 * MIB) == 1600
    assert completion_timeout(64 * 1024 * MIB, MigrationOptions(timeout=30)) == 30
    assert completion_timeout(512 * MIB, MigrationOptions(timeout_per_gib=100, min_timeout=1)) == 50


# --- options -> flags and params ------------------------------------------------------

def test_default_flags_are_novas_and_no_params():
    flags, params = migration_flags_and_params(MigrationOptions())
    assert flags == (VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_PERSIST_DEST
                     | VIR_MIGRATE_UNDEFINE_SOURCE)
    assert params == {}
    assert not flags & VIR_MIGRATE_POSTCOPY  # never by default


def test_every_option_maps_to_its_flag_or_param():
    options = MigrationOptions(bandwidth_mib=200, auto_converge=True, auto_converge_initial=20,
                               auto_converge_increment=10, postcopy=True,
                               parallel_connections=4, copy_storage=True,
                               migrate_disks=["vda"], migrate_uri="tcp://10.0.0.2",
                               undefine_source=False, persist_dest=False)
    flags, params = migration_flags_and_params(options)
    assert flags & VIR_MIGRATE_AUTO_CONVERGE
    assert flags & VIR_MIGRATE_POSTCOPY
    assert flags & VIR_MIGRATE_PARALLEL
    assert flags & VIR_MIGRATE_NON_SHARED_DISK
    assert not flags & VIR_MIGRATE_UNDEFINE_SOURCE
    assert not flags & VIR_MIGRATE_PERSIST_DEST
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


def test_libvirt_constant_values_match_libvirt():
    libvirt = pytest.importorskip("libvirt")
    names = [name for name in dir(libvirt_connection) if name.startswith("VIR_")]
    assert len(names) >= 19
    for name in names:
        assert getattr(libvirt_connection, name) == getattr(libvirt, name), name
    for value, name in libvirt_connection.GUEST_STATES.items():
        assert getattr(libvirt, "VIR_DOMAIN_" + name.upper()) == value, name


# --- progress and reporting -----------------------------------------------------------

def test_progress_line_reads_like_the_operator_wants():
    p = MigrationProgress("a1-g1", "hv-a1", "hv-a2", "precopy",
                          sample(1, int(TOTAL * 0.36)), elapsed=1.0)
    assert str(p) == "a1-g1 -> hv-a2: 64% of 128 MiB"
    p = MigrationProgress("a1-g1", "hv-a1", "hv-a2", "precopy", sample(3, 0))
    assert str(p) == "a1-g1 -> hv-a2: 100% of 128 MiB, pass 3"
    assert str(MigrationProgress("a1-g1", "hv-a1", "hv-a2", "setup")) == "a1-g1 -> hv-a2: setup"


def test_dirty_rate_is_converted_from_pages_to_bytes():
    assert migration_watchdog.dirty_rate_bytes({"memory_dirty_rate": 100, "memory_page_size": 4096}) == 409600
    assert migration_watchdog.dirty_rate_bytes({}) is None


def test_completed_stats_summary_names_the_figures():
    raw = {"downtime": 11, "time_elapsed": 397, "setup_time": 1, "memory_processed": 725781,
           "data_total": TOTAL, "memory_iteration": 2, "memory_dirty_rate": 3,
           "memory_page_size": 4096, "memory_bps": 35336739}
    summary = migration_watchdog.completed_stats_summary(raw)
    assert summary["downtime_ms"] == 11 and summary["total_time_ms"] == 397
    assert summary["setup_time_ms"] == 1 and summary["memory_iterations"] == 2
    assert summary["memory_transferred_bytes"] == 725781 and summary["dirty_rate_bps"] == 12288


def test_host_label_never_leaks_the_uri():
    assert libvirt_connection.host_label("qemu+ssh://root@hv-1.example/system?keyfile=/secret/id") == "hv-1.example"
    assert libvirt_connection.host_label("qemu+tcp://127.0.1.12/session") == "127.0.1.12"
    assert libvirt_connection.host_label("qemu:///system") == "localhost"


def test_stall_suggestion_names_the_remedies():
    text = migration_recovery.suggestion(MigrationOptions(), "stalled")
    assert text == "; try: enable auto_converge, allow post-copy or set max_downtime_ms"
    text = migration_recovery.suggestion(MigrationOptions(auto_converge=True, bandwidth_mib=10), "stalled")
    assert text == "; try: allow post-copy, set max_downtime_ms or raise bandwidth_mib"


def test_known_libvirt_errors_get_a_hint():
    assert "machine-id" in migration_recovery.hint_for("Attempt to migrate guest to the same host 1234")
    text = "unable to execute QEMU command 'migrate-set-capabilities': Postcopy is not supported"
    assert "userfaultfd" in migration_recovery.hint_for(text)
    assert migration_recovery.hint_for("something else") is None


def test_migration_error_knows_where_the_guest_is():
    error = MigrationError("web-3 still running on hv-1: ...", guest="web-3", source="hv-1",
                           destination="hv-2", reason="stalled", location="source",
                           running_on="hv-1")
    assert not error.moved
    assert error.as_dict()["running_on"] == "hv-1"


# --- migrate_guest against fakes of the libvirt connection and domain objects ---------------
# Small stand-ins for libvirt.virConnect / virDomain, enough to drive migrate_guest() through
# its pre-flight, the migration job, _verify_success and _recover without a daemon.

SRC_URI = "qemu+tcp://hv-1/system"
DST_URI = "qemu+tcp://hv-2/system"
UUID = "6f1c2f9e-0d7b-4a53-9c34-1d2e3f405162"


def libvirt_error(message, code=38):
    """A libvirt.libvirtError as libvirt raises it (38: VIR_ERR_SYSTEM_ERROR)."""
    libvirt = pytest.importorskip("libvirt")
    exc = libvirt.libvirtError(message)
    exc.err = (code, 7, message, 2, None, None, None, 0, 0)
    return exc


class FakeDomain:
    def __init__(self, name="web-3", uuid=UUID, state=VIR_DOMAIN_RUNNING, reason=1,
                 active=True, persistent=True, autostart=False, completed_job=None):
        self._name, self.uuid = name, uuid
        self.state_reason = (state, reason)
        self.active, self.persistent, self.autostart_flag = active, persistent, autostart
        self.completed_job = completed_job if completed_job is not None else {"type": 0}
        self.failing = {}           # method name -> exception it raises
        self.calls = []             # (method, args) of the calls that change something
        self.on_migrate = None      # what migrateToURI3 does (set by World)
        self.current_job = {"type": 0}  # jobStats() while the job runs
        self.postcopy_started = threading.Event()

    def _check(self, method):
        if method in self.failing:
            raise self.failing[method]

    def name(self):
        return self._name

    def UUIDString(self):  # noqa: N802 - libvirt's name
        self._check("UUIDString")
        return self.uuid

    def state(self):
        self._check("state")
        return self.state_reason

    def isActive(self):  # noqa: N802
        self._check("isActive")
        return int(self.active)

    def isPersistent(self):  # noqa: N802
        self._check("isPersistent")
        return int(self.persistent)

    def autostart(self):
        self._check("autostart")
        return int(self.autostart_flag)

    def setAutostart(self, flag):  # noqa: N802
        self._check("setAutostart")
        self.calls.append(("setAutostart", flag))
        self.autostart_flag = bool(flag)

    def maxMemory(self):  # noqa: N802
        self._check("maxMemory")
        return 128 * 1024

    def XMLDesc(self, flags=0):  # noqa: N802
        self._check("XMLDesc")
        return "<domain><devices/></domain>"

    def jobStats(self, flags=0):  # noqa: N802
        self._check("jobStats")
        if flags == VIR_DOMAIN_JOB_STATS_COMPLETED:
            return dict(self.completed_job)
        return dict(self.current_job)

    def migrateStartPostCopy(self, flags=0):  # noqa: N802
        self.calls.append(("migrateStartPostCopy", flags))
        self.postcopy_started.set()

    def migrateToURI3(self, uri, params, flags):  # noqa: N802
        self.calls.append(("migrateToURI3", flags))
        self.on_migrate(self, params, flags)

    def migrateSetMaxDowntime(self, ms, flags=0):  # noqa: N802
        self.calls.append(("migrateSetMaxDowntime", ms))

    def abortJob(self):  # noqa: N802
        self.calls.append(("abortJob", None))

    def resume(self):
        self._check("resume")
        self.calls.append(("resume", None))
        self.state_reason = (VIR_DOMAIN_RUNNING, 1)

    def pause_for_switch_over(self):
        self.state_reason = (VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_MIGRATION)

    @property
    def resumed(self):
        return ("resume", None) in self.calls


VIR_DOMAIN_PAUSED_MIGRATION = 2  # libvirt.VIR_DOMAIN_PAUSED_MIGRATION
VIR_DOMAIN_SHUTOFF = 5  # libvirt.VIR_DOMAIN_SHUTOFF
CAPS = "<capabilities><host><uuid>%s</uuid></host></capabilities>"


class FakeConnection:
    def __init__(self, host):
        self.host = host
        self.domains = {}
        self.down = None            # an exception every call raises (daemon gone)
        self.failing = {}

    def _check(self, method):
        if self.down is not None:
            raise self.down
        if method in self.failing:
            raise self.failing[method]

    def add(self, dom):
        self.domains[dom.uuid] = dom
        return dom

    def lookupByName(self, name):  # noqa: N802
        self._check("lookupByName")
        for dom in self.domains.values():
            if dom.name() == name:
                return dom
        raise libvirt_error("Domain not found: no domain with matching name '%s'" % name,
                            VIR_ERR_NO_DOMAIN)

    def lookupByUUIDString(self, uuid):  # noqa: N802
        self._check("lookupByUUIDString")
        if uuid in self.domains:
            return self.domains[uuid]
        raise libvirt_error("Domain not found", VIR_ERR_NO_DOMAIN)

    def getCapabilities(self):  # noqa: N802
        self._check("getCapabilities")
        return CAPS % ("00000000-0000-0000-0000-00000000000%d" % int(self.host[-1]))

    def close(self):
        return 0


class World:
    """One guest on hv-1, an empty hv-2; migrateToURI3 succeeds unless a test says otherwise."""

    def __init__(self, **domain):
        pytest.importorskip("libvirt")
        self.src, self.dst = FakeConnection("hv-1"), FakeConnection("hv-2")
        self.dom = self.src.add(FakeDomain(**domain))
        self.dom.on_migrate = self.switch_over

    def connect(self, uri):
        return {SRC_URI: self.src, DST_URI: self.dst}[uri]

    def migrate(self, **options):
        options.setdefault("poll_interval", 0.01)
        return migration.migrate_guest("web-3", SRC_URI, DST_URI, MigrationOptions(**options),
                                       source_name="hv-1", dest_name="hv-2", connect=self.connect)

    def fail(self, **options):
        with pytest.raises(MigrationError) as failed:
            self.migrate(**options)
        return failed.value

    # What migrateToURI3 may do ------------------------------------------------------------
    def switch_over(self, dom, _params, flags):
        """A completed migration as libvirt does it (PERSIST_DEST / UNDEFINE_SOURCE honoured)."""
        self.dst.add(FakeDomain(dom.name(), dom.uuid, persistent=bool(flags & VIR_MIGRATE_PERSIST_DEST),
                                completed_job={"type": 3, "downtime": 12, "time_elapsed": 400}))
        dom.active, dom.state_reason = False, (VIR_DOMAIN_SHUTOFF, 3)
        if flags & VIR_MIGRATE_UNDEFINE_SOURCE or not dom.persistent:
            del self.src.domains[dom.uuid]

    def paused_then(self, dest_copy=None, dest_down=False, source_job=None):
        """The failure cases: the source copy is left paused at switch-over; the destination
        has ``dest_copy`` (None: nothing) and may stop answering; the source's completed-job
        result is ``source_job`` (libvirt job type)."""
        def run(dom, _params, _flags):
            dom.pause_for_switch_over()
            if source_job is not None:
                dom.completed_job = source_job
            if dest_copy is not None:
                self.dst.add(FakeDomain(dom.name(), dom.uuid, state=dest_copy[0], reason=dest_copy[1]))
            if dest_down:
                self.dst.down = libvirt_error("Cannot recv data: Connection reset by peer")
            raise libvirt_error("migration failed: Unable to read from socket")
        self.dom.on_migrate = run


def test_fake_world_migrates_and_verifies():
    world = World()
    result = world.migrate()
    assert result["changed"] and result["downtime_ms"] == 12
    assert UUID in world.dst.domains and UUID not in world.src.domains


# --- case 4: resume on the source only when no copy can run on the destination --------------

RUNNING_SRC = (True, VIR_DOMAIN_RUNNING, 1)
PAUSED_SRC = (True, VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_MIGRATION)
NO_COPY = (False, None, None)
DEFINED_ONLY = (False, VIR_DOMAIN_SHUTOFF, 0)
PAUSED_COPY = (True, VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_MIGRATION)
RUNNING_COPY = (True, VIR_DOMAIN_RUNNING, 1)
UNREACHABLE = None
# libvirt's completed-job result on the source (jobStats(COMPLETED)): type 0 none, 3 completed,
# 4 failed, 5 cancelled. libvirt 9.0 clears it when a migration fails (type 0): only a result
# that says the job stopped while data was still to send proves the switch-over never happened.
JOB_NONE = {"type": 0}
JOB_COMPLETED = {"type": 3, "data_remaining": 0, "downtime": 20}
JOB_FAILED = {"type": 4, "data_remaining": 40 * MIB}
JOB_CANCELLED = {"type": 5, "data_remaining": 12 * MIB}
JOB_FAILED_AFTER_TRANSFER = {"type": 4, "data_remaining": 0}


@pytest.mark.parametrize("src, dst, was_running, postcopy, job, resume, words", [
    # the destination answered
    (PAUSED_SRC, NO_COPY, True, False, None, True, "hv-2 answered and has no active copy"),
    (PAUSED_SRC, DEFINED_ONLY, True, False, None, True, "hv-2 answered and has no active copy"),
    (PAUSED_SRC, PAUSED_COPY, True, False, JOB_FAILED, False, "active copy on hv-2"),
    (PAUSED_SRC, RUNNING_COPY, True, False, None, False, "active copy on hv-2"),
    # the destination could not be asked: only libvirt's job result on the source can tell
    (PAUSED_SRC, UNREACHABLE, True, False, JOB_FAILED, True, "failed before the switch-over"),
    (PAUSED_SRC, UNREACHABLE, True, False, JOB_CANCELLED, True, "cancelled before the switch-over"),
    (PAUSED_SRC, UNREACHABLE, True, False, JOB_COMPLETED, False, "hv-2 could not be asked"),
    (PAUSED_SRC, UNREACHABLE, True, False, JOB_FAILED_AFTER_TRANSFER, False, "a copy may run on hv-2"),
    (PAUSED_SRC, UNREACHABLE, True, False, JOB_NONE, False, "hv-2 could not be asked"),
    (PAUSED_SRC, UNREACHABLE, True, False, None, False, "hv-2 could not be asked"),
    # post-copy: neither side holds the whole guest, resuming the source would run stale memory
    (PAUSED_SRC, NO_COPY, True, True, JOB_FAILED, False, "post-copy"),
    ((True, VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_POSTCOPY), NO_COPY, True, False, None, False,
     "post-copy"),
    ((True, VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_POSTCOPY_FAILED), UNREACHABLE, True, False,
     JOB_FAILED, False, "post-copy"),
    # nothing to resume, or not ours to resume
    (PAUSED_SRC, NO_COPY, False, False, None, False, "paused before the migration"),
    (RUNNING_SRC, UNREACHABLE, True, False, None, False, "not paused"),
    (UNREACHABLE, NO_COPY, True, False, None, False, "hv-1 could not be asked"),
])
def test_resume_decision_table(src, dst, was_running, postcopy, job, resume, words):
    allowed, why = migration_recovery.may_resume_on_source(src, dst, was_running, postcopy, job,
                                                           source_name="hv-1", dest_name="hv-2")
    assert allowed is resume
    assert words in why


def test_unreachable_destination_after_switch_over_leaves_the_guest_paused_and_says_how_to_resume():
    world = World()
    # The switch-over completed: hv-2 runs the guest, then its daemon stops answering.
    world.paused_then(dest_copy=(VIR_DOMAIN_RUNNING, 1), dest_down=True, source_job=JOB_NONE)
    error = world.fail()
    assert not world.dom.resumed, "resumed on hv-1 while hv-2 may run it: two copies on one disk"
    assert world.dom.state_reason[0] == VIR_DOMAIN_PAUSED
    assert error.location == "source (paused)" and error.paused_on == "hv-1"
    assert error.running_on is None
    text = error.message
    assert text.startswith("web-3 is PAUSED on hv-1")
    assert "hv-2 could not be asked" in text and "Connection reset by peer" in text
    assert "virsh -c %s list --all" % DST_URI in text
    assert "virsh -c %s resume web-3" % SRC_URI in text


def test_resume_command_never_shows_a_uri_password():
    world = World()
    world.paused_then(dest_down=True)
    secret_src, secret_dst = "qemu+tcp://admin:s3cret@hv-1/system", "qemu+tcp://admin:s3cret@hv-2/system"
    conns = {secret_src: world.src, secret_dst: world.dst}
    with pytest.raises(MigrationError) as failed:
        migration.migrate_guest("web-3", secret_src, secret_dst, MigrationOptions(poll_interval=0.01),
                                connect=conns.__getitem__)
    assert "s3cret" not in failed.value.message
    assert "virsh -c qemu+tcp://admin:********@hv-1/system resume web-3" in failed.value.message


def test_destination_answering_without_a_copy_lets_the_source_resume():
    world = World()
    world.paused_then(dest_copy=None)
    error = world.fail()
    assert world.dom.resumed
    assert error.location == "source" and error.running_on == "hv-1"
    assert "resumed after the failure left it paused: hv-2 answered and has no active copy" in error.message


def test_unreachable_destination_and_a_failed_job_result_lets_the_source_resume():
    world = World()
    world.paused_then(dest_down=True, source_job=JOB_FAILED)
    error = world.fail()
    assert world.dom.resumed
    assert error.location == "source" and error.running_on == "hv-1"
    assert "failed before the switch-over" in error.message


def test_active_copy_on_the_destination_is_never_doubled():
    world = World()
    world.paused_then(dest_copy=(VIR_DOMAIN_RUNNING, 1), source_job=JOB_FAILED)
    error = world.fail()
    assert not world.dom.resumed
    assert error.location == "both" and "resolve by hand" in error.message


# --- case 15: a guest that was running runs on exactly one side, or is named as paused where -

def test_paused_source_that_could_not_be_resumed_is_reported_paused_on_its_source():
    world = World()
    world.paused_then(dest_copy=None)
    world.dom.failing["resume"] = libvirt_error("internal error: unable to execute QEMU command 'cont'")
    error = world.fail()
    assert error.location == "source (paused)" and error.paused_on == "hv-1"
    assert error.running_on is None and not error.moved
    assert error.message.startswith("web-3 is PAUSED on hv-1")
    assert "resuming it on hv-1 failed: internal error" in error.message
    assert "virsh -c %s resume web-3" % SRC_URI in error.message
    assert error.as_dict()["paused_on"] == "hv-1"


def test_success_reported_but_the_source_copy_is_paused_resumes_it_since_hv2_has_none():
    # Before: "still running on hv-1" while it was paused there, and it stayed paused.
    world = World()
    world.dom.on_migrate = lambda dom, _params, _flags: dom.pause_for_switch_over()
    error = world.fail()
    assert world.dom.resumed and world.dom.state_reason[0] == VIR_DOMAIN_RUNNING
    assert error.reason == "not-on-destination"
    assert error.location == "source" and error.running_on == "hv-1"
    assert error.message.startswith("web-3 still running on hv-1 (resumed after the failure"
                                    " left it paused: hv-2 answered and has no active copy)")


def test_success_reported_but_the_source_copy_is_paused_and_will_not_resume_is_named_paused():
    world = World()
    world.dom.on_migrate = lambda dom, _params, _flags: dom.pause_for_switch_over()
    world.dom.failing["resume"] = libvirt_error("Requested operation is not valid")
    error = world.fail()
    assert error.location == "source (paused)" and error.paused_on == "hv-1"
    assert "still running" not in error.message
    assert error.message.startswith("web-3 is PAUSED on hv-1: migration to hv-2 reported success")


def test_success_reported_but_the_destination_copy_is_paused_is_named_paused_there():
    world = World()

    def paused_on_arrival(dom, params, flags):
        world.switch_over(dom, params, flags)
        world.dst.domains[UUID].state_reason = (VIR_DOMAIN_PAUSED, 1)
    world.dom.on_migrate = paused_on_arrival
    error = world.fail()
    assert error.location == "destination (paused)" and error.paused_on == "hv-2"
    assert error.running_on is None and error.moved
    assert error.message.startswith("web-3 is PAUSED on hv-2")
    assert "virsh -c %s resume web-3" % DST_URI in error.message


def test_failure_leaving_only_a_paused_destination_copy_names_it_paused_there():
    world = World()

    def lost_source(dom, _params, _flags):
        dom.active, dom.state_reason = False, (VIR_DOMAIN_SHUTOFF, 3)
        world.dst.add(FakeDomain(dom.name(), dom.uuid, state=VIR_DOMAIN_PAUSED,
                                 reason=VIR_DOMAIN_PAUSED_MIGRATION))
        raise libvirt_error("operation failed: job 'migration out' failed: finish failed")
    world.dom.on_migrate = lost_source
    error = world.fail()
    assert error.location == "destination (paused)" and error.paused_on == "hv-2"
    assert "PAUSED on hv-2" in error.message


# --- case 12: libvirt errors before the job starts leave the guest untouched on its source ---

@pytest.mark.parametrize("where, method", [
    ("src", "lookupByName"),
    ("dom", "UUIDString"),
    ("dom", "state"),
    ("dom", "isActive"),
    ("dom", "isPersistent"),
    ("dom", "autostart"),
    ("src", "getCapabilities"),
    ("dst", "getCapabilities"),
    ("dst", "lookupByUUIDString"),
    ("dom", "maxMemory"),
])
def test_libvirt_error_before_the_job_starts_is_a_migration_error_on_the_source(where, method):
    world = World()
    target = {"src": world.src, "dst": world.dst, "dom": world.dom}[where]
    target.failing[method] = libvirt_error("Cannot write data: Broken pipe")
    error = world.fail()
    assert error.location == "source" and error.running_on == "hv-1", error.as_dict()
    assert error.reason == "preflight-error"
    assert error.message.startswith("web-3 not migrated, left untouched on hv-1:")
    assert "Cannot write data: Broken pipe" in error.message
    assert ("hv-2" if where == "dst" else "hv-1") in error.message.split(":", 1)[1]
    assert not any(call[0] == "migrateToURI3" for call in world.dom.calls)


@pytest.mark.parametrize("function", ["migration_flags_and_params", "_disk_bytes"])
def test_errors_preparing_the_job_leave_the_guest_untouched_on_its_source(monkeypatch, function):
    def broken(*_args, **_kwargs):
        raise libvirt_error("Unable to read from monitor: Connection reset by peer")
    monkeypatch.setattr(migration, function, broken)
    world = World()
    error = world.fail(copy_storage=True)
    assert error.location == "source" and error.running_on == "hv-1"
    assert "Connection reset by peer" in error.message
    assert not any(call[0] == "migrateToURI3" for call in world.dom.calls)


def test_guest_missing_on_the_source_is_still_not_found():
    world = World(name="other")
    error = world.fail()
    assert error.reason == "not-found" and error.location == "unknown"


# --- case 5: the guest keeps its admin state (autostart, persistent or transient) -----------

def test_transient_source_guest_is_not_made_persistent():
    flags, _params = migration_flags_and_params(MigrationOptions(), source_persistent=False)
    assert not flags & VIR_MIGRATE_PERSIST_DEST and not flags & VIR_MIGRATE_UNDEFINE_SOURCE
    flags, _params = migration_flags_and_params(MigrationOptions(), source_persistent=True)
    assert flags & VIR_MIGRATE_PERSIST_DEST and flags & VIR_MIGRATE_UNDEFINE_SOURCE


def test_transient_guest_migrates_transient():
    world = World(persistent=False)
    result = world.migrate()
    flags = [call[1] for call in world.dom.calls if call[0] == "migrateToURI3"][0]
    assert not flags & VIR_MIGRATE_PERSIST_DEST and not flags & VIR_MIGRATE_UNDEFINE_SOURCE
    assert not world.dst.domains[UUID].persistent
    assert result["persistent"] is False and result["autostart"] is False


def test_autostart_is_carried_to_the_destination():
    world = World(autostart=True)
    result = world.migrate()
    copy = world.dst.domains[UUID]
    assert copy.persistent and ("setAutostart", 1) in copy.calls and copy.autostart_flag
    assert result["autostart"] is True and result["persistent"] is True
    assert not result.get("warnings")


def test_no_autostart_leaves_the_destination_alone():
    world = World()
    result = world.migrate()
    assert world.dst.domains[UUID].calls == [] and result["autostart"] is False


def test_autostart_that_cannot_be_set_is_a_warning_with_the_command_not_a_failure():
    world = World(autostart=True)
    original = world.switch_over

    def arrive_stubborn(dom, params, flags):
        original(dom, params, flags)
        world.dst.domains[UUID].failing["setAutostart"] = libvirt_error("Permission denied")
    world.dom.on_migrate = arrive_stubborn
    result = world.migrate()
    assert result["changed"] and result["autostart"] is False
    assert any("virsh -c %s autostart web-3" % DST_URI in w and "Permission denied" in w
               for w in result["warnings"]), result["warnings"]


def test_autostart_of_a_definition_left_on_the_source_moves_with_the_guest():
    # undefine_source off: the source keeps an inactive definition; with autostart left on it
    # would start a second copy of the guest when the source boots.
    world = World(autostart=True)
    result = world.migrate(undefine_source=False)
    assert world.dom.autostart_flag is False and ("setAutostart", 0) in world.dom.calls
    assert world.dst.domains[UUID].autostart_flag is True
    assert result["autostart"] is True and result["source_autostart_disabled"] is True


def test_autostart_cannot_follow_a_transient_destination_copy_and_says_so():
    world = World(autostart=True)
    result = world.migrate(persist_dest=False, undefine_source=False)
    assert world.dst.domains[UUID].calls == []
    assert world.dom.autostart_flag is False  # no second copy at the source's next boot
    assert result["autostart"] is False
    assert any("persist_dest" in w for w in result["warnings"]), result["warnings"]


def test_migration_error_says_where_for_people():
    def error(**kwargs):
        return MigrationError("x", guest="web-3", source="hv-1", destination="hv-2", **kwargs)
    assert error(location="source", running_on="hv-1").where == "hv-1"
    assert error(location="source (paused)", paused_on="hv-1").where == "hv-1 (paused)"
    assert error(location="destination (crashed)", paused_on="hv-2").where == "hv-2 (crashed)"
    assert error(location="both").where == "hv-1 and hv-2 (active on both)"
    assert error(location="nowhere").where == "NOWHERE"
    assert error(location="unknown").where == "unknown"
    assert error(location="source (paused)", paused_on="hv-1").as_dict()["where"] == "hv-1 (paused)"


def test_paused_guest_is_never_reported_as_nowhere_or_unknown():
    world = World()
    world.paused_then(dest_copy=(VIR_DOMAIN_RUNNING, 1), dest_down=True)
    error = world.fail()
    assert error.where == "hv-1 (paused)"
    assert "NOWHERE" not in error.message and "unknown" not in error.location


def test_completed_post_copy_leaving_the_destination_paused_says_how_to_resume_it_there():
    # migrateToURI3 returned after a post-copy phase: the destination holds the whole guest,
    # so its paused copy may be resumed once checked (not "do not resume either copy").
    world = World()
    world.dom.current_job = {"type": 2, "memory_iteration": 3, "data_total": 128 * MIB,
                             "data_remaining": 40 * MIB}

    def postcopy_then_paused(dom, params, flags):
        assert dom.postcopy_started.wait(10), "the monitor never switched to post-copy"
        world.switch_over(dom, params, flags)
        world.dst.domains[UUID].state_reason = (VIR_DOMAIN_PAUSED, 1)
    world.dom.on_migrate = postcopy_then_paused
    error = world.fail(postcopy=True, postcopy_after_iterations=2)
    assert ("migrateStartPostCopy", 0) in world.dom.calls
    assert error.location == "destination (paused)" and error.paused_on == "hv-2"
    assert "do not resume" not in error.message
    assert "virsh -c %s resume web-3" % DST_URI in error.message


# --- guest_migrate on a failure: where the guest is, read again (issue 10 case 15) ---------

def _module_run(monkeypatch, migrate, located):
    """guest_migrate.run() with the driver replaced: ``migrate`` raises or returns, each
    locate_guest call takes the next entry of ``located`` (an exception is raised)."""
    from ansible_collections.virtfleet.cluster.plugins.modules import guest_migrate
    reads = list(located)

    def locate(guest, uris, connect=None):
        answer = reads.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)
    monkeypatch.setattr(migration, "locate_guest", locate)
    monkeypatch.setattr(migration, "migrate_guest", migrate)
    params = {"guest": "g1", "source_uri": "test:///hv-1", "dest_uri": "test:///hv-2",
              "source_name": "hv-1", "dest_name": "hv-2"}
    try:
        return guest_migrate.run(params), reads
    except VirtfleetError as failure:  # what run_module hands to fail_json
        return dict(failure.as_result(), failed=True, msg=failure.message), reads


def _left_paused(*_args, **_kwargs):
    raise MigrationError("g1 left paused on hv-1: hv-2 could not be asked", guest="g1",
                         source="hv-1", destination="hv-2", reason="destination-unreachable",
                         location="source (paused)", running_on=None, paused_on="hv-1")


def test_guest_migrate_failure_names_the_paused_guest_and_where(monkeypatch):
    result, _left = _module_run(monkeypatch, _left_paused,
                                [{"hv-1": "running", "hv-2": "absent"}, {"hv-1": "paused", "hv-2": "absent"}])
    assert result["failed"] and result["running_on"] is None
    assert result["paused_on"] == "hv-1"
    assert result["where"] == "hv-1 (paused)"


def test_guest_migrate_failure_location_is_read_again_after_the_attempt(monkeypatch):
    result, left = _module_run(monkeypatch, _left_paused,
                               [{"hv-1": "running", "hv-2": "absent"}, {"hv-1": "paused", "hv-2": "absent"}])
    assert result["location"] == {"hv-1": "paused", "hv-2": "absent"}  # not the "running" read before
    assert left == []


def test_guest_migrate_failure_with_an_unreadable_location_does_not_report_the_old_one(monkeypatch):
    result, _left = _module_run(monkeypatch, _left_paused,
                                [{"hv-1": "running", "hv-2": "absent"}, RuntimeError("no answer")])
    assert result["failed"] and result["where"] == "hv-1 (paused)"
    assert result.get("location") != {"hv-1": "running", "hv-2": "absent"}  # stale: never shown
    assert "g1 left paused on hv-1" in result["msg"]


class _FakeModule:
    def __init__(self):
        self.warnings, self.exited, self.failed = [], None, None

    def warn(self, text):
        self.warnings.append(text)

    def exit_json(self, **result):
        self.exited = result
        raise SystemExit(0)  # as AnsibleModule does

    def fail_json(self, **result):
        self.failed = result
        raise SystemExit(1)


def test_guest_migrate_shows_migration_warnings_as_task_warnings(monkeypatch):
    from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import finish
    warning = "g1 runs on hv-2 without the autostart it had on hv-1: run `virsh -c URI autostart g1`"

    def migrated(*_args, **_kwargs):
        return {"guest": "g1", "downtime_ms": 20, "total_time_ms": 700, "warnings": [warning]}
    result, _left = _module_run(monkeypatch, migrated, [{"hv-1": "running", "hv-2": "absent"}])
    module = _FakeModule()
    with pytest.raises(SystemExit):
        finish(module, result)
    assert module.warnings == [warning]
    assert module.exited is not None and "warnings" not in module.exited  # not passed to exit_json
    assert module.failed is None
    failed = _FakeModule()
    with pytest.raises(SystemExit):
        finish(failed, dict(result, failed=True))
    assert failed.failed is not None and "failed" not in failed.failed and failed.exited is None
