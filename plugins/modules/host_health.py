#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_health
short_description: Tell whether a hypervisor host shows the signs that come before a failure
version_added: "0.1.0"
description:
  - Runs on the host itself and reads the signals that predict a failure - corrected and
    uncorrected memory errors (EDAC counters in sysfs, rasdaemon's database where installed),
    machine-check exceptions (the C(MCE) row of C(/proc/interrupts), rasdaemon's C(mce_record)),
    disk health (C(smartctl -H) where installed), a data filesystem gone read-only (C(/proc/mounts)),
    memory pressure (PSI C(/proc/pressure/memory)), NIC error counters
    (C(/sys/class/net/*/statistics/{rx,tx}_errors)) and whether libvirt answers.
  - Counters become rates per hour against the previous sample, kept in the cluster's shared state
    (C(<state_path>/.virtfleet/health/<host>.json)) so every controller sees the same history.
  - A source that is not there is reported C(not_checked), never as healthy; a counter without a
    previous sample (first check, or after a reboot reset it) is a C(baseline) whose rate the next
    check gives.
  - Says which signals crossed their threshold and why (value, rate, threshold).
author:
  - virtfleet maintainers (@virtfleet)
requirements:
  - libvirt-python on the host for the libvirt signal (without it that signal is not checked)
extends_documentation_fragment:
  - virtfleet.cluster.attributes
attributes:
  check_mode:
    support: full
    details: Reads and decides the same way; the sample is not kept for the next check.
  diff_mode:
    support: none
    details: Nothing to diff.
options:
  host:
    description: Name of the host (its inventory name) - names its sample in the shared state and the messages.
    type: str
    required: true
  root:
    description:
      - Directory under which C(/sys), C(/proc) and rasdaemon's database are read. C(/) on a real
        host; the lab points it at a per-host directory where tests write counters. A missing
        directory makes every source under it C(not_checked).
    type: path
    default: /
  state_path:
    description:
      - The cluster's shared primary storage path (C(virtfleet_storage.path)); the previous sample is
        kept in its C(.virtfleet/health) directory. The sample is kept only when that state directory
        has the cluster's identity file (M(virtfleet.cluster.maintenance_state) with C(state=init) gives it one),
        so a host whose shared mount is missing never writes into a private directory.
      - Without it, no rate is known (counters stay C(baseline)).
    type: path
  cluster:
    description: The host's cluster; the identity file of O(state_path) must name it.
    type: str
  thresholds:
    description: When a signal crosses. Rates are per hour; a signal crosses when its rate is above the threshold.
    type: dict
    default: {}
    suboptions:
      memory_corrected_per_hour:
        description: Corrected memory errors per hour (EDAC C(ce_count), rasdaemon).
        type: float
        default: 50.0
      memory_uncorrected_per_hour:
        description: Uncorrected memory errors per hour (EDAC C(ue_count), rasdaemon); 0 means any new one.
        type: float
        default: 0.0
      machine_check_per_hour:
        description: Machine-check exceptions per hour; 0 means any new one.
        type: float
        default: 0.0
      nic_errors_per_hour:
        description: Receive plus transmit errors per hour of the worst interface.
        type: float
        default: 600.0
      memory_pressure_full_avg60:
        description: PSI memory C(full avg60), the percentage of the last 60 s every task was stalled on memory.
        type: float
        default: 10.0
  min_interval:
    description:
      - Seconds. A rate over less time than this is computed as if over this time, and the previous
        sample is replaced only once it is this old - two checks a second apart must not turn one
        error into thousands an hour. Set it to the schedule's interval.
    type: int
    default: 300
  watched_mounts:
    description:
      - Mount points that must be writable. Any other data filesystem (ext4, xfs, nfs, ...) crosses
        when it was writable at the previous check and is read-only now.
    type: list
    elements: str
    default: [/, /var, /var/lib/libvirt, /var/log]
  smartctl:
    description: The smartctl program (name or path); disk health is not checked when it is not found.
    type: str
    default: smartctl
  libvirt_uri:
    description: The host's own libvirt daemon, asked whether it answers. Empty skips the signal (not checked).
    type: str
    default: qemu:///system
  libvirt_timeout:
    description: Seconds libvirt has to answer.
    type: int
    default: 15
  peers:
    description:
      - Other hosts of the cluster whose last answered check to read from the shared state
        (returned as RV(last_seen)); C(health_watch.yml) recovers a host silent for too long.
      - Every check also records, with O(state_path), when this host answered (not in check mode).
    type: list
    elements: str
    default: []
notes:
  - The sample is bookkeeping, not a change of the host - the module reports C(changed) false.
seealso:
  - module: virtfleet.cluster.maintenance_state
"""

EXAMPLES = r"""
- name: Check a hypervisor's health (rates against the sample kept in the cluster's shared state)
  virtfleet.cluster.host_health:
    host: "{{ inventory_hostname }}"
    cluster: "{{ virtfleet_cluster }}"
    state_path: "{{ virtfleet_storage.path }}"
    thresholds:
      memory_corrected_per_hour: 100
  register: health

- name: Say why
  ansible.builtin.debug:
    msg: "{{ health.crossed | map(attribute='why') | list }}"
  when: health.failing
"""

RETURN = r"""
failing:
  description: True when at least one signal crossed its threshold.
  returned: always
  type: bool
crossed:
  description:
    - The signals that crossed, worst first (C(signal), C(why), and where they apply C(value),
      C(rate_per_hour), C(threshold), C(counter), C(sources)).
  returned: always
  type: list
  elements: dict
worst:
  description: Name of the worst crossed signal, or null.
  returned: always
  type: str
signals:
  description:
    - Every signal by name (memory_uncorrected, machine_check, disk_health, readonly_filesystem, libvirt,
      memory_corrected, memory_pressure, nic_errors) with C(status) (C(ok), C(crossed), C(baseline),
      C(not_checked)) and C(why).
  returned: always
  type: dict
not_checked:
  description: Signals with no source on this host (never counted as healthy).
  returned: always
  type: list
  elements: str
baseline:
  description: Signals whose rate is not known yet (first sample, or counters reset by a reboot).
  returned: always
  type: list
  elements: str
rates:
  description: Counter name to its rate per hour since the previous sample.
  returned: always
  type: dict
previous_sample_age_s:
  description: Age of the previous sample the rates were computed against, or null.
  returned: always
  type: float
last_seen:
  description: Each of O(peers) to the time (epoch seconds) of its last answered check, or null when none is recorded.
  returned: always
  type: dict
sample_kept:
  description: Whether this check's sample was kept for the next one (not in check mode, not while the previous one is younger than O(min_interval)).
  returned: always
  type: bool
"""

import os
import shutil
import socket
import subprocess
import time
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.virtfleet.cluster.plugins.module_utils import host_health as hh
from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.state_store import StateError, StateStore, state_dir

THRESHOLD_SPEC = {name: dict(type="float", default=value) for name, value in hh.DEFAULT_THRESHOLDS.items()}

ARGUMENT_SPEC: Dict[str, Any] = dict(
    host=dict(type="str", required=True),
    root=dict(type="path", default="/"),
    state_path=dict(type="path"),
    cluster=dict(type="str"),
    thresholds=dict(type="dict", default={}, options=THRESHOLD_SPEC),
    min_interval=dict(type="int", default=hh.DEFAULT_MIN_INTERVAL_S),
    watched_mounts=dict(type="list", elements="str", default=list(hh.DEFAULT_WATCHED_MOUNTS)),
    smartctl=dict(type="str", default="smartctl"),
    libvirt_uri=dict(type="str", default="qemu:///system"),
    libvirt_timeout=dict(type="int", default=15),
    peers=dict(type="list", elements="str", default=[]),
)


def run_command(argv: List[str]) -> Tuple[int, str, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, "", str(exc)
    return done.returncode, done.stdout, done.stderr


def libvirt_probe(uri: str, timeout: int):
    """(probe, problem): probe() returns None when the daemon answered, else why not."""
    if not uri:
        return None, "libvirt_uri is empty"
    try:
        from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_connection
    except ImportError as exc:
        return None, "libvirt-python missing on the host: %s" % exc
    if not libvirt_connection.HAS_LIBVIRT:
        return None, "libvirt-python missing on the host"

    def probe() -> Optional[str]:
        try:
            conn = libvirt_connection.open_connection(uri, readonly=True, timeout=timeout)
            try:
                conn.getLibVersion()
            finally:
                conn.close()
        except Exception as exc:  # any failure is the signal: say what it was
            return str(getattr(exc, "message", None) or exc)
        return None
    return probe, None


def shared_state(params: Dict[str, Any]) -> Tuple[Optional[str], Optional[str]]:
    """(state directory to keep samples in, or None; why not). Only a directory that proved it is
    the cluster's shared one (its identity file names the cluster)."""
    if not params["state_path"]:
        return None, "no state_path: the sample is not kept and no rate is known"
    store = StateStore(state_dir(params["state_path"]), params["cluster"] or "?")
    identity = store.identity()
    if not identity:
        return None, ("%s has no cluster identity file (cluster-id.json) on %s: the sample is not kept there "
                      "(maintenance_state state=init gives it one)" % (store.path, socket.gethostname()))
    if params["cluster"] and identity.get("cluster") != params["cluster"]:
        return None, "%s holds the state of cluster %s, not %s: the sample is not kept there" % (
            store.path, identity.get("cluster"), params["cluster"])
    return store.path, None


def work(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    root, host = params["root"], params["host"]
    warnings = []
    if not os.path.isdir(root):
        warnings.append("root %s does not exist on %s: every source under it is not checked" % (root, socket.gethostname()))
    thresholds = dict(hh.DEFAULT_THRESHOLDS, **{k: v for k, v in (params["thresholds"] or {}).items() if v is not None})
    probe, libvirt_problem = libvirt_probe(params["libvirt_uri"], params["libvirt_timeout"])
    readings, problems = hh.gather(root, shutil.which(params["smartctl"]), run_command, probe, libvirt_problem)

    path, why_not = shared_state(params)
    previous = None
    if path:
        try:
            previous = hh.load_sample(path, host)
        except StateError as exc:
            warnings.append("previous health sample unreadable, starting again: %s" % exc)
    else:
        warnings.append(why_not)
    now = time.time()
    boot_id = hh.read_boot_id(root)
    result, sample = hh.check(readings, problems, previous, now, boot_id, thresholds, params["min_interval"],
                              params["watched_mounts"])
    keep = bool(path) and not check_mode and hh.keep_new_sample(previous, now, boot_id, params["min_interval"])
    if keep:
        try:
            hh.save_sample(path, host, sample)
        except OSError as exc:
            keep = False
            warnings.append("cannot keep the health sample in %s: %s" % (path, exc))
    result["last_seen"] = {}
    if path:
        try:
            if not check_mode:
                hh.record_seen(path, host, now)
            result["last_seen"] = hh.last_seen(path, [peer for peer in params["peers"] if peer != host])
        except (OSError, StateError) as exc:
            warnings.append("cannot record or read when hosts last answered in %s: %s" % (path, exc))
    result.update(changed=False, sample_kept=keep, msg=hh.summary(host, result), warnings=warnings)
    return result


def main() -> None:
    run_module(ARGUMENT_SPEC, work, needs_libvirt=False)


if __name__ == "__main__":
    main()
