#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

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
  - "Meant to run on the controller (C(delegate_to: localhost)) with the host's C(virtfleet_libvirt_uri)."
author:
  - virtfleet maintainers (@virtfleet)
requirements:
  - libvirt-python on the machine that runs the module (the controller)
attributes:
  check_mode:
    support: full
    description: Reports which guests it would start; starts none.
  diff_mode:
    support: none
    description: Nothing to diff.
options:
  uri:
    description: libvirt connection URI of the host the guests are defined on.
    type: str
    required: true
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    HAS_LIBVIRT, LibvirtHostError, host_label, libvirt, open_connection, uri_secrets)


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


def run(params, check_mode, connect=open_connection):
    """The module's work: returns (failed, result)."""
    name = params["host"] or host_label(params["uri"])
    conn = connect(params["uri"])
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


def main():
    module = AnsibleModule(
        argument_spec=dict(
            uri=dict(type="str", required=True),
            host=dict(type="str"),
            guests=dict(type="list", elements="str", required=True),
        ),
        supports_check_mode=True,
    )
    module.no_log_values.update(uri_secrets(module.params["uri"]))
    if not HAS_LIBVIRT:
        module.fail_json(msg="the libvirt Python bindings (libvirt-python) are missing on the machine running "
                             "this module; install them on the controller")
    try:
        failed, result = run(module.params, module.check_mode)
    except (LibvirtHostError, libvirt.libvirtError) as exc:
        module.fail_json(msg="cannot start %s on %s: %s" % (", ".join(module.params["guests"]),
                                                            module.params["host"] or host_label(module.params["uri"]), exc))
    if failed:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
