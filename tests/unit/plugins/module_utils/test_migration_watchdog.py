"""JobWatch's decisions while a migration job runs (issue 17): when it aborts (timeout in
seconds, stall, cancel), when it switches to post-copy, when it sets the maximum downtime.

A fake clock, a fake worker thread and a fake libvirt domain stand in for time, the thread
running migrateToURI3 and the job's statistics: the lab cannot make a job run for exactly 31 s.
What a migration really does is tested on the lab (tests/lab/test_migrate_drain.py).
"""
import threading

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import migration_watchdog
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_options import MigrationOptions
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_watchdog import JobWatch

MIB = 1024 * 1024
GIB = 1024 * MIB
RUNNING_JOB = {"type": 2, "data_total": 512 * MIB, "data_processed": 100 * MIB, "data_remaining": 412 * MIB,
               "memory_iteration": 1}


class Clock:
    """time.monotonic() of the watchdog: advanced only by the fake worker's join()."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now


class Worker:
    """The thread running migrateToURI3: alive until the job is aborted (or ``lives`` joins)."""

    def __init__(self, clock, dom, lives=1000):
        self.clock = clock
        self.dom = dom
        self.lives = lives
        self.joins = []

    def is_alive(self):
        return not self.dom.aborted_at and len(self.joins) < self.lives

    def join(self, seconds=None):
        self.joins.append(seconds)
        self.clock.now += seconds


class Domain:
    def __init__(self, clock, stats=None, job_after=0.0):
        self.clock = clock
        self.stats = RUNNING_JOB if stats is None else stats
        self.job_after = job_after  # seconds before the job exists (jobStats type 0 until then)
        self.aborted_at = None
        self.postcopy_at = None
        self.downtime_calls = []

    def jobStats(self):
        return dict(self.stats) if self.clock.now >= self.job_after else {"type": 0}

    def abortJob(self):
        self.aborted_at = self.clock.now

    def migrateStartPostCopy(self, flags):
        self.postcopy_at = self.clock.now

    def migrateSetMaxDowntime(self, ms, flags):
        self.downtime_calls.append((self.clock.now, ms, flags))


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(migration_watchdog, "time", fake)
    return fake


def watch(clock, options, dom=None, worker=None, timeout=30.0, cancel=None):
    dom = dom or Domain(clock)
    worker = worker or Worker(clock, dom)
    samples = []
    reason = JobWatch(options, lambda phase, stats, elapsed: samples.append((phase, elapsed)),
                      cancel).watch(dom, worker, 0.0, timeout, 512 * MIB)
    return reason, dom, worker, samples


def test_the_timeout_is_in_seconds_and_aborts_at_the_first_sample_past_it(clock):
    reason, dom, worker, samples = watch(clock, MigrationOptions(poll_interval=1.0), timeout=30.0)
    assert reason == ("timeout", "aborted after the 30 s timeout (512 MiB of guest memory)")
    assert dom.aborted_at == 31.0  # 30 s is not past the timeout yet, 31 s is
    assert worker.joins[-1] == migration_watchdog.ABORT_GRACE_SECONDS
    assert samples[-1] == ("precopy", 31.0)


def test_a_job_that_ends_before_its_timeout_is_not_aborted(clock):
    dom = Domain(clock)
    reason, dom, worker, samples = watch(clock, MigrationOptions(poll_interval=1.0), dom=dom,
                                         worker=Worker(clock, dom, lives=30), timeout=30.0)
    assert reason is None and dom.aborted_at is None
    assert len(samples) == 29  # the last join ends the worker: no sample after it


def test_a_job_in_setup_is_sampled_as_setup_and_a_finished_poll_reads_nothing(clock):
    dom = Domain(clock, stats={"type": 2}, job_after=3.0)
    reason, dom, worker, samples = watch(clock, MigrationOptions(poll_interval=1.0), dom=dom,
                                         worker=Worker(clock, dom, lives=6))
    assert reason is None
    assert samples == [("setup", 3.0), ("setup", 4.0), ("setup", 5.0)]


def test_a_cancel_event_aborts_the_job(clock):
    cancel = threading.Event()
    cancel.set()
    reason, dom, worker, samples = watch(clock, MigrationOptions(poll_interval=1.0), cancel=cancel)
    assert reason == ("cancelled", "cancelled") and dom.aborted_at == 1.0


def test_max_downtime_is_set_once_when_the_job_exists(clock):
    dom = Domain(clock, job_after=2.0)
    watch(clock, MigrationOptions(poll_interval=1.0, max_downtime_ms=250), dom=dom, worker=Worker(clock, dom, lives=6))
    assert dom.downtime_calls == [(2.0, 250, 0)]


def test_no_max_downtime_leaves_qemus_default(clock):
    dom = Domain(clock)
    watch(clock, MigrationOptions(poll_interval=1.0), dom=dom, worker=Worker(clock, dom, lives=6))
    assert dom.downtime_calls == []


def test_postcopy_starts_after_the_allowed_iterations_and_is_never_aborted(clock):
    stats = dict(RUNNING_JOB, memory_iteration=3)
    dom = Domain(clock, stats=stats)
    options = MigrationOptions(poll_interval=1.0, postcopy=True, postcopy_after_iterations=3)
    reason, dom, worker, samples = watch(clock, options, dom=dom, worker=Worker(clock, dom, lives=50), timeout=10.0)
    assert dom.postcopy_at == 1.0
    assert reason is None and dom.aborted_at is None  # 49 s, well past the timeout: post-copy runs on
    assert samples[0] == ("precopy", 1.0) and samples[1] == ("postcopy", 2.0)


def test_postcopy_waits_for_its_iteration(clock):
    dom = Domain(clock, stats=dict(RUNNING_JOB, memory_iteration=2))
    options = MigrationOptions(poll_interval=1.0, postcopy=True, postcopy_after_iterations=3)
    watch(clock, options, dom=dom, worker=Worker(clock, dom, lives=5))
    assert dom.postcopy_at is None


def test_postcopy_is_the_answer_to_a_timeout_when_allowed(clock):
    dom = Domain(clock)
    options = MigrationOptions(poll_interval=1.0, postcopy=True, postcopy_after_iterations=100)
    reason, dom, worker, samples = watch(clock, options, dom=dom, worker=Worker(clock, dom, lives=40), timeout=30.0)
    assert dom.postcopy_at == 31.0 and dom.aborted_at is None and reason is None


def test_a_stalled_job_is_aborted_with_the_remaining_data(clock):
    class Stalling(Domain):
        def jobStats(self):
            # A new pass every sample, never less than 100 MiB left at its start.
            return dict(RUNNING_JOB, memory_iteration=int(self.clock.now), data_remaining=100 * MIB)
    dom = Stalling(clock)
    reason, dom, worker, samples = watch(clock, MigrationOptions(poll_interval=1.0, stall_iterations=3), dom=dom,
                                         timeout=1000.0)
    assert reason == ("stalled", "aborted after 3 iterations without progress (each pass starts again with"
                                 " about 100 MiB to send)")
    assert dom.aborted_at == 4.0


def test_the_timeout_counts_from_the_start_given(clock):
    clock.now = 100.0
    dom = Domain(clock)
    samples = []
    reason = JobWatch(MigrationOptions(poll_interval=1.0), lambda *sample: samples.append(sample)).watch(
        dom, Worker(clock, dom), 100.0, 5.0, 512 * MIB)
    assert reason[0] == "timeout" and dom.aborted_at == 106.0
    assert samples[0] == ("precopy", RUNNING_JOB, 1.0)  # the job's own statistics, elapsed from the start


@pytest.mark.parametrize("stats", [{}, None])
def test_polls_without_a_job_are_not_sampled_and_abort_nothing(clock, stats):
    class Unanswering(Domain):
        def jobStats(self):
            if stats is None:
                raise RuntimeError("domain is not running")
            return dict(stats)
    dom = Unanswering(clock)
    options = MigrationOptions(poll_interval=1.0, postcopy=True, postcopy_after_iterations=1)
    watch_ = JobWatch(options, lambda *sample: samples.append(sample))
    samples = []
    reason = watch_.watch(dom, Worker(clock, dom, lives=5), 0.0, 100.0, 512 * MIB)
    assert reason is None and samples == [] and dom.postcopy_at is None and dom.aborted_at is None
    assert watch_.postcopy_started is False


def test_postcopy_waits_for_the_worker_to_end_sampling_all_the_way(clock):
    dom = Domain(clock, stats=dict(RUNNING_JOB, memory_iteration=3))
    options = MigrationOptions(poll_interval=1.0, postcopy=True, postcopy_after_iterations=3)
    watch_ = JobWatch(options, lambda *sample: None)
    worker = Worker(clock, dom, lives=20)
    assert watch_.watch(dom, worker, 0.0, 5.0, 512 * MIB) is None
    assert len(worker.joins) == 20 and watch_.postcopy_started is True


def test_a_job_without_a_pass_count_is_not_switched_to_postcopy_after_one_pass(clock):
    dom = Domain(clock, stats={"type": 2, "data_total": 512 * MIB, "data_remaining": 400 * MIB})
    options = MigrationOptions(poll_interval=1.0, postcopy=True, postcopy_after_iterations=1)
    watch(clock, options, dom=dom, worker=Worker(clock, dom, lives=5))
    assert dom.postcopy_at is None


def test_stall_limit_below_one_is_refused():
    with pytest.raises(ValueError) as raised:
        migration_watchdog.StallDetector(0)
    assert str(raised.value) == "stall limit must be at least 1"


@pytest.mark.parametrize("value, text", [
    (None, "?"), (0, "0 B"), (1023, "1023 B"), (1024, "1 KiB"), (1536, "1.5 KiB"), (MIB - 1, "1024.0 KiB"),
    (MIB, "1 MiB"), (3 * MIB // 2, "1.5 MiB"), (1024 * MIB, "1 GiB"), (2560 * MIB, "2.5 GiB"),
])
def test_human_bytes(value, text):
    assert migration_watchdog.human_bytes(value) == text


def test_dirty_rate_is_pages_times_the_page_size():
    assert migration_watchdog.dirty_rate_bytes({"memory_dirty_rate": 10}) == 40960
    assert migration_watchdog.dirty_rate_bytes({"memory_dirty_rate": 10, "memory_page_size": 65536}) == 655360
    assert migration_watchdog.dirty_rate_bytes({"memory_page_size": 65536}) is None


def test_completed_stats_summary_names_every_figure():
    stats = {"downtime": 12, "time_elapsed": 3400, "setup_time": 5, "memory_processed": 600 * MIB,
             "data_processed": 700 * MIB, "data_total": 512 * MIB, "memory_iteration": 4, "memory_dirty_rate": 2,
             "memory_page_size": 4096, "memory_bps": 100 * MIB, "disk_processed": 9, "auto_converge_throttle": 20}
    assert migration_watchdog.completed_stats_summary(stats) == {
        "downtime_ms": 12, "total_time_ms": 3400, "setup_time_ms": 5, "memory_transferred_bytes": 600 * MIB,
        "data_total_bytes": 512 * MIB, "memory_iterations": 4, "dirty_rate_bps": 8192, "transfer_bps": 100 * MIB,
        "disk_transferred_bytes": 9, "auto_converge_throttle": 20}
    # Without the memory figure (older libvirt), what was sent in all stands for it.
    assert migration_watchdog.completed_stats_summary({"data_processed": 7})["memory_transferred_bytes"] == 7
    assert set(migration_watchdog.completed_stats_summary(None).values()) == {None}


def progress(phase, **stats):
    return migration_watchdog.MigrationProgress("web1", "hv1", "hv2", phase, stats or None)


def test_a_progress_sample_as_a_dict():
    sample = migration_watchdog.MigrationProgress(
        "web1", "hv1", "hv2", "precopy",
        {"data_total": 400, "data_processed": 100, "data_remaining": 300, "memory_iteration": 2,
         "memory_dirty_rate": 1, "memory_bps": 50})
    assert sample.as_dict() == {
        "guest": "web1", "source": "hv1", "destination": "hv2", "phase": "precopy", "data_total": 400,
        "data_processed": 100, "data_remaining": 300, "memory_iteration": 2, "dirty_rate_bps": 4096,
        "transfer_bps": 50, "elapsed": 0.0, "percent": 25}


@pytest.mark.parametrize("sample, text", [
    (progress("completed"), "web1 -> hv2: done"),
    (progress("setup", data_total=GIB, data_remaining=GIB), "web1 -> hv2: setup"),
    (progress("starting", data_total=GIB, data_remaining=GIB), "web1 -> hv2: starting"),
    (progress("precopy"), "web1 -> hv2: precopy"),
    (progress("precopy", data_total=GIB, data_remaining=GIB // 4, memory_iteration=1), "web1 -> hv2: 75% of 1 GiB"),
    (progress("precopy", data_total=GIB, data_remaining=GIB // 4, memory_iteration=2),
     "web1 -> hv2: 75% of 1 GiB, pass 2"),
    (progress("postcopy", data_total=GIB, data_remaining=0, memory_iteration=3),
     "web1 -> hv2: 100% of 1 GiB, pass 3 (postcopy)"),
])
def test_a_progress_sample_as_text(sample, text):
    assert str(sample) == text
