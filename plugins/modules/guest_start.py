#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: guest_start
short_description: Start guests again that a drain stopped (as the operator's policy allowed)
version_added: "0.1.0"
description:
  - Starts each guest of O(guests) that is defined but not running on the host at O(uri), and
    reports the ones already running. Meant for the guests a drain shut down because they could
    not live-migrate and the operator allowed stopping them (C(unmovable=shutdown) with
    C(stop_allowed_guests)). Once the host is back, they run again where they were.
  - Fails naming every guest it could not start (not defined on the host any more, or libvirt
    refused), after trying all of them.
  - "Runs on the controller (C(delegate_to: localhost)) with the host's C(virtfleet_libvirt_uri), or on
    the host itself with the default O(uri)."
author:
  - virtfleet maintainers (@virtfleet)
requirements:
  - libvirt-python on the machine that runs the module (the controller, or the host itself)
extends_documentation_fragment:
  - virtfleet.cluster.attributes
  - virtfleet.cluster.attributes.actiongroup_libvirt
  - virtfleet.cluster.libvirt_connection
attributes:
  check_mode:
    support: full
    details: Reports which guests it would start; starts none.
  diff_mode:
    support: none
    details: Nothing to diff.
options:
  host:
    description: Name of the host in messages (default the URI's host part).
    type: str
  guests:
    description: Names of the guests to start.
    type: list
    elements: str
    required: true
seealso:
  - module: virtfleet.cluster.host_drain
"""

EXAMPLES = r"""
- name: Start again the guests the drain was allowed to stop
  virtfleet.cluster.guest_start:
    uri: "{{ virtfleet_libvirt_uri }}"
    host: "{{ inventory_hostname }}"
    guests: "{{ drain.shutdown | selectattr('ok') | map(attribute='guest') | list }}"
  delegate_to: localhost
"""

RETURN = r"""
started:
  description: Guests started (or that would be, in check mode).
  returned: always
  type: list
  elements: str
already_running:
  description: Guests that were running already.
  returned: always
  type: list
  elements: str
not_started:
  description: Guests that could not be started, with why (C(guest), C(error)).
  returned: always
  type: list
  elements: dict
msg:
  description: What happened.
  returned: always
  type: str
"""

from ansible_collections.virtfleet.cluster.plugins.module_utils.ansible_module import run_module
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    CONNECTION_ARGUMENT_SPEC, LibvirtHostError, connector, host_label, libvirt)

ARGUMENT_SPEC = dict(
    CONNECTION_ARGUMENT_SPEC,
    host=dict(type="str"),
    guests=dict(type="list", elements="str", required=True),
)


def start_guests(conn, names, check_mode=False):
    """Start each named guest that is defined and inactive; returns (started, already, problems)."""
    started, already, problems = [], [], []
    for name in names:
        try:
            dom = conn.lookupByName(name)
            if dom.isActive():
                already.append(name)
                continue
            if not check_mode:
                dom.create()
            started.append(name)
        except Exception as exc:  # pylint: disable=broad-except  # any libvirt refusal is reported per guest
            problems.append({"guest": name, "error": str(exc)})
    return started, already, problems


def run(params, check_mode, connect=None):
    """Starts the guests: returns (failed, result)."""
    name = params["host"] or host_label(params["uri"])
    conn = (connect or connector(params))(params["uri"])
    try:
        started, already, problems = start_guests(conn, params["guests"], check_mode)
    finally:
        conn.close()
    result = {"changed": bool(started), "started": started, "already_running": already, "not_started": problems}
    parts = []
    if started:
        parts.append("%s %s on %s" % ("would start" if check_mode else "started", ", ".join(started), name))
    if already:
        parts.append("already running: %s" % ", ".join(already))
    if problems:
        parts.append("NOT started on %s: %s - start them by hand (virsh start NAME) once the cause is fixed"
                     % (name, "; ".join("%s (%s)" % (p["guest"], p["error"]) for p in problems)))
    result["msg"] = "; ".join(parts) or "no guest to start"
    return bool(problems), result


def work(params, check_mode):
    """The module's work: the result, failed when a guest could not be started."""
    try:
        failed, result = run(params, check_mode)
    except (LibvirtHostError, libvirt.libvirtError) as exc:
        raise LibvirtHostError("cannot start %s on %s: %s" % (", ".join(params["guests"]),
                                                              params["host"] or host_label(params["uri"]), exc)) from exc
    return dict(result, failed=failed)


def main():
    run_module(ARGUMENT_SPEC, work)


if __name__ == "__main__":
    main()
