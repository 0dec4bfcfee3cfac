# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure wave planning for rolling maintenance.

A wave is a set of hosts that go into maintenance at the same time. Clusters are independent
failure and capacity domains, so a wave takes the next hosts of every cluster at once; within
a cluster at most `max_unavailable` hosts are in one wave (the rest of the cluster must absorb
their guests). Clusters of different sizes simply run out of hosts at different waves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

ORDERINGS = ("given", "fewest_guests", "most_guests", "name")


@dataclass
class Wave:
    index: int  # 1-based
    by_cluster: Dict[str, List[str]] = field(default_factory=dict)

    @property
    def hosts(self) -> List[str]:
        return [h for cluster in sorted(self.by_cluster) for h in self.by_cluster[cluster]]

    def to_dict(self) -> dict:
        return {"index": self.index, "hosts": self.hosts,
                "by_cluster": {c: list(h) for c, h in sorted(self.by_cluster.items())}}


def _limit_for(cluster: str, max_unavailable: Union[int, Mapping[str, int]], default: int = 1) -> int:
    if isinstance(max_unavailable, Mapping):
        limit = max_unavailable.get(cluster, default)
    else:
        limit = max_unavailable
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError("max_unavailable of cluster %r must be an integer >= 1, not %r" % (cluster, limit))
    return limit


def plan_waves(host_clusters: Union[Mapping[str, str], Sequence[Tuple[str, str]]],
               max_unavailable: Union[int, Mapping[str, int]] = 1,
               order: Union[str, Callable[[str], object]] = "given",
               guest_counts: Optional[Mapping[str, int]] = None,
               skip: Iterable[str] = (), first: Iterable[str] = ()) -> List[Wave]:
    """Groups hosts into maintenance waves.

    host_clusters: host -> cluster, or (host, cluster) pairs; their order is the "given" order.
    max_unavailable: one limit for every cluster, or cluster -> limit (missing clusters: 1),
      e.g. each cluster's `virtfleet_max_unavailable`.
    order: within a cluster, "given", "fewest_guests" / "most_guests" (needs guest_counts;
      ties keep the given order), "name", or a key function of the host name.
    skip: hosts to leave out (already done, nothing to patch).
    first: hosts that go before every other host of their cluster whatever the order (hosts a
      failed run left in maintenance: they are out of service already); among themselves they
      follow the order.
    Returns waves numbered from 1; wave k holds the k-th batch of every cluster that still has
    hosts. Empty clusters produce no wave.
    """
    pairs = list(host_clusters.items()) if isinstance(host_clusters, Mapping) else list(host_clusters)
    seen = set()
    for host, _cluster in pairs:
        if host in seen:
            raise ValueError("host %r is listed twice" % host)
        seen.add(host)
    skipped = set(skip)
    position = {host: i for i, (host, _c) in enumerate(pairs)}

    if callable(order):
        key = order
    elif order == "given":
        key = position.get
    elif order == "name":
        key = str
    elif order in ("fewest_guests", "most_guests"):
        if guest_counts is None:
            raise ValueError("order %r needs guest_counts" % order)
        missing = [h for h, _c in pairs if h not in guest_counts and h not in skipped]
        if missing:
            raise ValueError("guest_counts lacks hosts: %s" % ", ".join(missing))
        sign = 1 if order == "fewest_guests" else -1

        def key(host):
            return (sign * guest_counts[host], position[host])
    else:
        raise ValueError("order must be one of %s or a function, not %r" % (", ".join(ORDERINGS), order))

    leading = set(first)

    def rank(host):
        return (0 if host in leading else 1, key(host))

    clusters: Dict[str, List[str]] = {}
    for host, cluster in pairs:
        if host not in skipped:
            clusters.setdefault(cluster, []).append(host)
    batches: Dict[str, List[List[str]]] = {}
    for cluster, members in clusters.items():
        limit = _limit_for(cluster, max_unavailable)
        members = sorted(members, key=rank)
        batches[cluster] = [members[i:i + limit] for i in range(0, len(members), limit)]

    waves = []
    for k in range(max((len(b) for b in batches.values()), default=0)):
        wave = Wave(index=k + 1)
        for cluster, cluster_batches in batches.items():
            if k < len(cluster_batches):
                wave.by_cluster[cluster] = cluster_batches[k]
        waves.append(wave)
    return waves


def wave_violations(waves: Sequence[Union[Wave, Iterable[str]]], cluster_of: Mapping[str, str],
                    max_unavailable: Union[int, Mapping[str, int]] = 1) -> List[str]:
    """Checks waves (Wave objects or plain host lists) against the limits.

    Returns one message per problem: a cluster with more than its max_unavailable hosts in a
    wave, a host in more than one wave, a host of unknown cluster. Empty list: all good.
    """
    problems = []
    wave_of: Dict[str, int] = {}
    for number, wave in enumerate(waves, start=1):
        hosts = wave.hosts if isinstance(wave, Wave) else list(wave)
        per_cluster: Dict[str, List[str]] = {}
        for host in hosts:
            if host in wave_of:
                problems.append("host %s is in wave %d and wave %d" % (host, wave_of[host], number))
            wave_of[host] = number
            if host not in cluster_of:
                problems.append("host %s (wave %d) has no cluster" % (host, number))
                continue
            per_cluster.setdefault(cluster_of[host], []).append(host)
        for cluster, members in sorted(per_cluster.items()):
            limit = _limit_for(cluster, max_unavailable)
            if len(members) > limit:
                problems.append("wave %d takes %d hosts of cluster %s (%s) at once; max_unavailable is %d"
                                % (number, len(members), cluster, ", ".join(members), limit))
    return problems


def assert_waves_valid(waves, cluster_of, max_unavailable=1):
    """Raises ValueError listing every violation found by `wave_violations`."""
    problems = wave_violations(waves, cluster_of, max_unavailable)
    if problems:
        raise ValueError("invalid maintenance waves: " + "; ".join(problems))
