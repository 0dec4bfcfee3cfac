# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How to migrate: the options of one live migration, defined once.

`MIGRATION_OPTIONS_SPEC` is the Ansible argument spec of the options (spread into
guest_migrate's spec, the ``options`` of host_drain's ``migration``): Ansible refuses unknown
names and wrong types before any code runs. `MigrationOptions` holds them and checks what a
spec cannot say (ranges, combinations); `migration_flags_and_params` maps them to
``migrateToURI3``'s flags and parameters and `completion_timeout` gives the time a migration
may take. Pure: nothing here imports Ansible or needs libvirt-python.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    VIR_MIGRATE_AUTO_CONVERGE, VIR_MIGRATE_LIVE, VIR_MIGRATE_NON_SHARED_DISK, VIR_MIGRATE_PARALLEL,
    VIR_MIGRATE_PEER2PEER, VIR_MIGRATE_PERSIST_DEST, VIR_MIGRATE_POSTCOPY, VIR_MIGRATE_UNDEFINE_SOURCE)

MIB = 1024 * 1024
GIB = 1024 * MIB

# Nova and KubeVirt give a migration 800 s per GiB of guest memory before giving up.
DEFAULT_TIMEOUT_PER_GIB = 800
# ... but never less than this: the first migration after a daemon starts takes seconds of
# setup alone (lab-facts: ~5 s instead of <1 s), and small guests would get absurd timeouts.
DEFAULT_MIN_TIMEOUT = 120
# Memory iterations without a new low of data_remaining before the migration counts as stalled.
DEFAULT_STALL_ITERATIONS = 10
DEFAULT_POLL_INTERVAL = 0.5
DEFAULT_POSTCOPY_AFTER_ITERATIONS = 2

# The options a task may set (guest_migrate's own, host_drain's `migration`). `live`,
# `peer2peer` and `poll_interval` are not among them: only live peer-to-peer migration is
# driven, and the polling pace is the code's business (tests shorten it).
MIGRATION_OPTIONS_SPEC: Dict[str, Dict[str, Any]] = dict(
    max_downtime_ms=dict(type="int"),
    bandwidth_mib=dict(type="int"),
    auto_converge=dict(type="bool", default=False),
    auto_converge_initial=dict(type="int"),
    auto_converge_increment=dict(type="int"),
    postcopy=dict(type="bool", default=False),
    postcopy_after_iterations=dict(type="int", default=DEFAULT_POSTCOPY_AFTER_ITERATIONS),
    parallel_connections=dict(type="int"),
    persist_dest=dict(type="bool", default=True),
    undefine_source=dict(type="bool", default=True),
    copy_storage=dict(type="bool", default=False),
    migrate_disks=dict(type="list", elements="str"),
    migrate_uri=dict(type="str"),
    timeout=dict(type="int"),
    timeout_per_gib=dict(type="int", default=DEFAULT_TIMEOUT_PER_GIB),
    min_timeout=dict(type="int", default=DEFAULT_MIN_TIMEOUT),
    stall_iterations=dict(type="int", default=DEFAULT_STALL_ITERATIONS),
)


class Options:
    """Base of the option dataclasses (`MigrationOptions`, the drain's `DrainOptions`).

    Callers without Ansible's validation (tests, the bench, the lab) get a ValueError naming an
    unknown option rather than a TypeError, and None stands for "not set" (an unset Ansible
    option), so it takes the field's default."""

    KIND: ClassVar[str] = "option"

    def __new__(cls, *_args: Any, **kwargs: Any):
        unknown = set(kwargs) - set(cls.field_names())
        if unknown:
            raise ValueError("unknown %s(s): %s" % (cls.KIND, ", ".join(sorted(unknown))))
        return super().__new__(cls)

    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        """Each option's default (None: not set)."""
        return {field.name: None if field.default is dataclasses.MISSING else field.default
                for field in dataclasses.fields(cls)}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]):
        """Build from a dict that may hold other keys too (e.g. module parameters)."""
        names = cls.field_names()
        return cls(**{key: value for key, value in params.items() if key in names})

    def _fill_defaults(self) -> None:
        for name, default in self.defaults().items():
            if getattr(self, name) is None:
                setattr(self, name, default)

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class MigrationOptions(Options):
    """How to migrate. Defaults are the safe, common choice (Nova's flags, no post-copy)."""

    KIND: ClassVar[str] = "migration option"

    live: bool = True
    peer2peer: bool = True
    persist_dest: bool = True
    undefine_source: bool = True
    max_downtime_ms: Optional[int] = None          # None: leave QEMU's default (300 ms)
    bandwidth_mib: Optional[int] = None            # MiB/s; None: libvirt/QEMU default
    auto_converge: bool = False
    auto_converge_initial: Optional[int] = None    # % of vCPU throttling to start with
    auto_converge_increment: Optional[int] = None  # % added each time it does not converge
    postcopy: bool = False                         # opt-in only: post-copy cannot be aborted
    postcopy_after_iterations: int = DEFAULT_POSTCOPY_AFTER_ITERATIONS
    parallel_connections: Optional[int] = None     # multifd connections (VIR_MIGRATE_PARALLEL)
    copy_storage: bool = False                     # storage not shared: copy disks (NON_SHARED_DISK)
    migrate_disks: Optional[List[str]] = None      # target names (vda, ...) to copy; None: all
    migrate_uri: Optional[str] = None              # which network carries the memory stream
    timeout: Optional[int] = None                  # seconds; None: scaled by memory (and copied disks)
    timeout_per_gib: int = DEFAULT_TIMEOUT_PER_GIB
    min_timeout: int = DEFAULT_MIN_TIMEOUT
    stall_iterations: int = DEFAULT_STALL_ITERATIONS
    poll_interval: float = DEFAULT_POLL_INTERVAL

    def __post_init__(self) -> None:
        self._fill_defaults()
        self.validate()

    def validate(self) -> None:
        """The checks an argument spec cannot express (types are Ansible's job)."""
        problems = []
        if not self.peer2peer:
            # migrateToURI3 without PEER2PEER needs a destination *connection* from the client
            # (managed direct migration); this module only drives the peer-to-peer kind.
            problems.append("peer2peer must stay enabled: only peer-to-peer migration is driven")
        if self.undefine_source and not self.persist_dest:
            problems.append("undefine_source without persist_dest would leave the guest defined"
                            " nowhere once it stops")
        for name in ("max_downtime_ms", "bandwidth_mib", "parallel_connections", "timeout",
                     "stall_iterations", "postcopy_after_iterations"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append("%s must be at least 1 (got %r)" % (name, value))
        for name in ("auto_converge_initial", "auto_converge_increment"):
            value = getattr(self, name)
            if value is not None:
                if not self.auto_converge:
                    problems.append("%s needs auto_converge" % name)
                elif not 0 < value <= 100:
                    problems.append("%s is a percentage in 1..100 (got %r)" % (name, value))
        if self.migrate_disks and not self.copy_storage:
            problems.append("migrate_disks needs copy_storage")
        if self.poll_interval <= 0:
            problems.append("poll_interval must be positive")
        if problems:
            raise ValueError("invalid migration options: " + "; ".join(problems))


def migration_flags_and_params(options: MigrationOptions, source_persistent: bool = True) -> Tuple[int, Dict[str, Any]]:
    """Map options to the ``(flags, params)`` pair of ``migrateToURI3``. Pure.

    A transient guest (``source_persistent`` False) stays transient: PERSIST_DEST would
    define it on the destination, and there is no source definition to undefine."""
    flags = 0
    params: Dict[str, Any] = {}
    if options.live:
        flags |= VIR_MIGRATE_LIVE
    if options.peer2peer:
        flags |= VIR_MIGRATE_PEER2PEER
    if options.persist_dest and source_persistent:
        flags |= VIR_MIGRATE_PERSIST_DEST
    if options.undefine_source and source_persistent:
        flags |= VIR_MIGRATE_UNDEFINE_SOURCE
    if options.bandwidth_mib:
        params["bandwidth"] = int(options.bandwidth_mib)
    if options.auto_converge:
        flags |= VIR_MIGRATE_AUTO_CONVERGE
        if options.auto_converge_initial is not None:
            params["auto_converge.initial"] = int(options.auto_converge_initial)
        if options.auto_converge_increment is not None:
            params["auto_converge.increment"] = int(options.auto_converge_increment)
    if options.postcopy:
        # The flag only *allows* post-copy; the switch is migrateStartPostCopy(), sent by the
        # monitor after postcopy_after_iterations iterations (or on a stall / timeout).
        flags |= VIR_MIGRATE_POSTCOPY
    if options.parallel_connections:
        flags |= VIR_MIGRATE_PARALLEL
        params["parallel.connections"] = int(options.parallel_connections)
    if options.copy_storage:
        flags |= VIR_MIGRATE_NON_SHARED_DISK
        if options.migrate_disks:
            params["migrate_disks"] = list(options.migrate_disks)
    if options.migrate_uri:
        params["migrate_uri"] = options.migrate_uri
    return flags, params


def completion_timeout(memory_bytes: int, options: Optional[MigrationOptions] = None, disk_bytes: int = 0) -> float:
    """Seconds a migration may take before it is aborted.

    An explicit ``options.timeout`` wins; otherwise ``timeout_per_gib`` seconds per GiB of
    memory (plus copied disks, as Nova counts them), at least ``min_timeout``.
    """
    options = options or MigrationOptions()
    if options.timeout:
        return float(options.timeout)
    gib = (memory_bytes + (disk_bytes or 0)) / float(GIB)
    return max(float(options.min_timeout), options.timeout_per_gib * gib)
