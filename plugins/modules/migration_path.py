#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: migration_path
short_description: Check, on a source host, that its libvirt daemon can reach every peer it may migrate guests to
version_added: "0.1.0"
description:
  - A peer-to-peer live migration is opened by the source host's libvirt daemon, which connects to
    the destination's URI itself, as the daemon's user, with that user's SSH key and known_hosts
    (C(qemu+ssh)) or the host's TLS client certificate (C(qemu+tls)). This module runs B(on the
    source host) (no C(delegate_to)), as the daemon's user (root for C(qemu:///system) - use
    become), and opens the URI of each of O(peers) the same way, each bounded by O(timeout).
  - Fails when any path does not answer, naming source, destination, the (redacted) URI, the user it
    was opened as, the error and the fix (the key, the known-hosts entry, the TLS certificate, the
    listener), so a run refuses before its first drain instead of failing in it.
  - Like the daemon, the check has no terminal and no SSH agent - an SSH URI is opened with
    C(no_tty=1) and without C(SSH_AUTH_SOCK) - so a missing known-hosts entry or key fails here
    as it would for the daemon.
author:
  - virtfleet maintainers (@virtfleet)
requirements:
  - libvirt-python on the source host (Debian/Ubuntu and RHEL package python3-libvirt)
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.attributes.info_module
options:
  source:
    description: Name of this (source) host in messages. Defaults to the host's name as the system knows it.
    type: str
  peers:
    description:
      - The hosts this one may send guests to, each with the URI the source daemon opens to reach it
        (what the drains pass as the destination's migration URI - the role and the playbooks pass
        each peer's C(virtfleet_libvirt_uri)).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Inventory name of the peer.
        type: str
        required: true
      uri:
        description: libvirt URI of the peer as the source host's daemon opens it.
        type: str
        required: true
  timeout:
    description: Seconds to wait for each peer to answer (peers are asked side by side).
    type: int
    default: 20
notes:
  - Secrets embedded in the URIs are masked in the output; messages show URIs redacted.
  - Run it as the daemon's user. A check run as another user proves nothing about the daemon's keys.
seealso:
  - module: virtfleet.cluster.host_drain
  - module: virtfleet.cluster.guest_migrate
"""

EXAMPLES = r"""
- name: Every other host of the cluster answers from this host, as the daemon's user (root)
  virtfleet.cluster.migration_path:
    source: "{{ inventory_hostname }}"
    peers: >-
      {%- set out = [] -%}
      {%- for name in groups['all'] if name != inventory_hostname
            and hostvars[name].virtfleet_cluster | default('') == virtfleet_cluster -%}
      {%- set _ = out.append({'name': name, 'uri': hostvars[name].virtfleet_libvirt_uri}) -%}
      {%- endfor -%}
      {{ out }}
  become: true

- name: The same with explicit peers
  virtfleet.cluster.migration_path:
    source: kvm-01
    peers:
      - {name: kvm-02, uri: "qemu+ssh://root@kvm-02.mgmt.example/system"}
      - {name: kvm-03, uri: "qemu+tls://kvm-03.migration.example/system"}
    timeout: 10
  become: true
  register: paths
"""

RETURN = r"""
paths:
  description: One entry per peer - C(source), C(destination), C(uri) (redacted), C(user) (who opened it),
    C(ok), C(seconds), and for a broken path C(error) and C(fix).
  returned: always
  type: list
  elements: dict
  sample:
    - {source: hv-a1, destination: hv-a2, uri: "qemu+ssh://vf-lab-hv-a2@127.0.1.12/session", user: vf-lab-hv-a1,
       ok: true, seconds: 0.4, error: null, fix: null}
broken:
  description: Names of the peers whose path does not work.
  returned: always
  type: list
  elements: str
user:
  description: The user the check ran as on the source host.
  returned: always
  type: str
msg:
  description: Every broken path with its fix, or the peers reached.
  returned: always
  type: str
"""

import os
import pwd
import socket

from ansible_collections.virtfleet.cluster.plugins.module_utils import migration_path
from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module

ARGUMENT_SPEC = dict(
    source=dict(type="str"),
    peers=dict(type="list", elements="dict", required=True,
               options=dict(name=dict(type="str", required=True), uri=dict(type="str", required=True))),
    timeout=dict(type="int", default=migration_path.DEFAULT_TIMEOUT_S),
)


def work(params, _check_mode):
    """Only reads: check mode runs the same check."""
    source = params["source"] or socket.gethostname()
    user = pwd.getpwuid(os.geteuid()).pw_name
    results = migration_path.check_paths(source, params["peers"], user, timeout=params["timeout"])
    return dict(migration_path.summary(source, results), user=user)


def main():
    run_module(ARGUMENT_SPEC, work)


if __name__ == "__main__":
    main()
