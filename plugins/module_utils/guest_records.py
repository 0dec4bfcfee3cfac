# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Guest records: each guest's libvirt definition kept in the cluster's shared state, with the
host it was last seen on, so the guests of a host that died can be started elsewhere.

A record is ``<storage path>/.virtfleet/guests/<guest>.json``::

    {"name", "uuid", "host", "xml", "memory_mib", "vcpus", "seen", "seen_iso"}

It is written by whoever sees the guest (the ``guest_records`` module on a host, reading that
host's own libvirt): atomically through ``rename(2)``, like every rewrite of the shared state
(``state_store``), and only when the definition or the host changed, so a refresh that finds
nothing new writes nothing. The definition is the persistent (inactive) XML: what the guest
would boot with, not the runtime details of one QEMU process.

Pure Python (no Ansible, no libvirt): the module feeds it definitions.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, Dict, Iterable, List, Mapping, Optional

from ansible_collections.virtfleet.cluster.plugins.module_utils.state_store import (
    StateError, StateStore, iso, make_state_dirs, now, read_json, write_json_atomic)

GUESTS_DIR = "guests"
_MEMORY_UNITS_MIB = {"b": 1.0 / (1 << 20), "bytes": 1.0 / (1 << 20), "k": 1.0 / 1024, "kib": 1.0 / 1024,
                     "m": 1.0, "mib": 1.0, "g": 1024.0, "gib": 1024.0, "t": 1 << 20, "tib": 1 << 20}


def definition_summary(xml: str) -> Dict[str, Any]:
    """name, uuid, memory (MiB, the maximum the guest may use) and vCPUs of a domain XML;
    StateError when it is not one."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise StateError("a guest definition is not valid XML (%s)" % exc)
    name = (root.findtext("name") or "").strip()
    if root.tag != "domain" or not name:
        raise StateError("a guest definition must be a libvirt <domain> with a <name>")
    memory = root.find("memory")
    memory_mib = 0
    if memory is not None and (memory.text or "").strip():
        factor = _MEMORY_UNITS_MIB.get((memory.get("unit") or "KiB").lower(), 1.0 / 1024)
        memory_mib = int(round(float(memory.text.strip()) * factor))
    vcpus = int((root.findtext("vcpu") or "1").strip() or 1)
    return {"name": name, "uuid": (root.findtext("uuid") or "").strip() or None,
            "memory_mib": memory_mib, "vcpus": vcpus}


class GuestRecords(StateStore):
    """The guest records of one cluster's state directory."""

    def _guests_dir(self) -> str:
        return os.path.join(self.path, GUESTS_DIR)

    def _record_path(self, name: str) -> str:
        if not name or "/" in name or name.startswith("."):
            raise StateError("invalid guest name for a record: %r" % name)
        return os.path.join(self._guests_dir(), name + ".json")

    def read_all(self) -> Dict[str, Dict[str, Any]]:
        """guest name -> record, for every record of the cluster."""
        try:
            names = sorted(entry[:-5] for entry in os.listdir(self._guests_dir())
                           if entry.endswith(".json") and not entry.startswith("."))
        except FileNotFoundError:
            return {}
        records = {}
        for name in names:
            record = read_json(self._record_path(name))
            if isinstance(record, dict):
                records[name] = record
        return records

    def last_on(self, host: str) -> List[Dict[str, Any]]:
        """The records of the guests last seen on host, by name."""
        return [record for _name, record in sorted(self.read_all().items()) if record.get("host") == host]

    def update(self, host: str, definitions: Iterable[str], seen: Optional[float] = None) -> Dict[str, List[str]]:
        """Record every definition (domain XML) as last seen on host. Returns the names
        ``written`` (new, moved or changed) and ``unchanged``. In check mode nothing is written."""
        self.ensure_storage()
        seen = now() if seen is None else seen
        written, unchanged = [], []
        if not self.check_mode:
            make_state_dirs(self._guests_dir())
        for xml in definitions:
            summary = definition_summary(xml)
            path = self._record_path(summary["name"])
            before = read_json(path) if os.path.exists(path) else None
            if isinstance(before, Mapping) and before.get("host") == host and before.get("xml") == xml:
                unchanged.append(summary["name"])
                continue
            written.append(summary["name"])
            if not self.check_mode:
                write_json_atomic(path, dict(summary, host=host, xml=xml, seen=seen, seen_iso=iso(seen)))
        return {"written": written, "unchanged": unchanged}
