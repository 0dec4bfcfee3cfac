# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a drain is given: how to drain (`DrainOptions`, the migration options included) and the
cluster's hosts as the caller knows them (`ClusterHost`). Pure; nothing here imports Ansible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Union

from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_options import MigrationOptions, Options
from ansible_collections.virtfleet.cluster.plugins.module_utils.placement import (
    PlacementPolicy, ORDERS, UNMOVABLE_POLICIES)

DEFAULT_MAX_PARALLEL = 2             # vdsm: 2 outgoing per host
DEFAULT_MAX_INCOMING = 1             # vdsm allows 2 in; 1 keeps a destination's link calm
DEFAULT_SHUTDOWN_TIMEOUT = 300


@dataclass
class DrainOptions(Options):
    """How to drain; ``migration`` is the options of each migration (MigrationOptions or a
    dict of them)."""

    KIND: ClassVar[str] = "drain option"

    max_parallel: int = DEFAULT_MAX_PARALLEL
    max_incoming_per_destination: int = DEFAULT_MAX_INCOMING
    order: str = "largest_first"
    unmovable: str = "fail"                                  # fail | shutdown | leave
    unmovable_guests: Sequence[str] = ()                     # names the operator declares unmovable
    stop_allowed_guests: Optional[List[str]] = None          # with unmovable=shutdown: only these may be stopped
    anti_affinity_groups: Optional[Dict[str, List[str]]] = None  # {group: [guest, ...]}
    memory_overcommit: float = 1.0
    cpu_overcommit: float = 4.0
    memory_reserve_mib: int = 512
    respect_free_memory: bool = True
    cpu_check: bool = True
    shared_storage_path: Optional[str] = None                # disks elsewhere are local (need copy_storage)
    shutdown_timeout: int = DEFAULT_SHUTDOWN_TIMEOUT
    migration: Union[MigrationOptions, Dict, None] = None

    def __post_init__(self) -> None:
        self._fill_defaults()
        if isinstance(self.migration, dict):
            self.migration = MigrationOptions.from_params(self.migration)
        self.migration = self.migration or MigrationOptions()
        self.unmovable_guests = list(self.unmovable_guests or ())
        self.anti_affinity_groups = dict(self.anti_affinity_groups or {})
        problems = []
        if self.max_parallel < 1:
            problems.append("max_parallel must be at least 1")
        if self.max_incoming_per_destination < 1:
            problems.append("max_incoming_per_destination must be at least 1")
        if self.order not in ORDERS:
            problems.append("order must be one of %s" % ", ".join(ORDERS))
        if self.unmovable not in UNMOVABLE_POLICIES:
            problems.append("unmovable must be one of %s" % ", ".join(UNMOVABLE_POLICIES))
        if problems:
            raise ValueError("invalid drain options: " + "; ".join(problems))

    def policy(self) -> PlacementPolicy:
        return PlacementPolicy(memory_overcommit=self.memory_overcommit,
                               cpu_overcommit=self.cpu_overcommit,
                               memory_reserve_mib=self.memory_reserve_mib,
                               order=self.order, unmovable=self.unmovable,
                               respect_free_memory=self.respect_free_memory)


@dataclass
class ClusterHost:
    """One host as the caller knows it: ``name``, controller ``uri``, maintenance mark, and
    optionally ``migration_uri``, the URI the *source daemon* uses to reach it (peer-to-peer;
    defaults to ``uri``)."""

    name: str
    uri: str
    in_maintenance: bool = False
    migration_uri: Optional[str] = None

    def __post_init__(self) -> None:
        self.in_maintenance = bool(self.in_maintenance)
        self.migration_uri = self.migration_uri or self.uri

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterHost:
        return cls(data["name"], data["uri"], data.get("in_maintenance", False),
                   data.get("migration_uri"))
