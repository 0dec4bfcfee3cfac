"""The host_drain action plugin's progress printer: few, readable lines per guest."""
from ansible_collections.virtfleet.cluster.plugins.action.host_drain import ProgressPrinter
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_watchdog import MigrationProgress

MIB = 1024 * 1024


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def sample(guest, percent, iteration=1, phase="precopy"):
    total = 128 * MIB
    return MigrationProgress(guest, "hv-a1", "hv-a2", phase, {
        "data_total": total, "data_remaining": int(total * (100 - percent) / 100.0),
        "memory_iteration": iteration})


def test_prints_every_ten_percent_each_pass_and_the_end():
    lines, clock = [], Clock()
    printer = ProgressPrinter("hv-a1", lines.append, clock)
    printer(MigrationProgress("a1-g1", "hv-a1", "hv-a2", "starting"))
    for percent in range(0, 101, 2):
        clock.now += 0.1
        printer(sample("a1-g1", percent))
    printer(sample("a1-g1", 40, iteration=2))  # a new pass is always worth a line
    printer(MigrationProgress("a1-g1", "hv-a1", "hv-a2", "completed"))
    assert lines[0] == "hv-a1 drain: a1-g1 -> hv-a2: starting"
    assert "hv-a1 drain: a1-g1 -> hv-a2: 60% of 128 MiB" in lines
    assert 10 <= len(lines) <= 15
    assert lines[-2] == "hv-a1 drain: a1-g1 -> hv-a2: 40% of 128 MiB, pass 2"
    assert lines[-1] == "hv-a1 drain: a1-g1 -> hv-a2: done"


def test_a_quiet_guest_still_shows_life_every_few_seconds():
    lines, clock = [], Clock()
    printer = ProgressPrinter("hv-a1", lines.append, clock)
    for _sample in range(60):  # 30 s stuck at 50 %
        clock.now += 0.5
        printer(sample("big", 50))
    assert 5 <= len(lines) <= 7


def test_guests_are_throttled_independently():
    lines, clock = [], Clock()
    printer = ProgressPrinter("hv-a1", lines.append, clock)
    printer(sample("a", 10))
    printer(sample("b", 10))
    printer(sample("a", 12))
    assert [line.split(": ")[1] for line in lines] == ["a -> hv-a2", "b -> hv-a2"]
