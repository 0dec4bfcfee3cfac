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
