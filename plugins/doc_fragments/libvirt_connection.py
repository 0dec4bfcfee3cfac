# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The connection options of the libvirt modules, documented once.

The specs they document live in plugins/module_utils/libvirt_connection.py:
DOCUMENTATION is CONNECTION_ARGUMENT_SPEC (modules that talk to one libvirt daemon),
CREDENTIALS is CREDENTIALS_ARGUMENT_SPEC (modules given several hosts' URIs); a unit test
keeps both in step with the specs.
"""

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options:
  uri:
    description:
      - libvirt connection URI of the host, for example C(qemu+ssh://root@hv1/system),
        C(qemu+tls://hv1/system) or, in the lab, C(qemu+tcp://127.0.1.11/session).
      - "The default reaches the libvirt of the machine the module runs on, as
        the community.libvirt modules do - run on a hypervisor host, its own daemon. From the
        controller (C(delegate_to: localhost)) pass the host's C(virtfleet_libvirt_uri)."
      - The URI stays visible in output; a password embedded in it (C(user:password@host)) and the
        values of secret-looking query parameters (C(apikey=), C(secretkey=), C(*pass*),
        C(*token*)) are masked. Prefer O(password), since C(ansible -vvv) echoes task arguments
        before any module runs.
    type: str
    default: qemu:///system
  username:
    description: User name for libvirt authentication (SASL), when the URI needs one.
    type: str
  password:
    description: Password for libvirt authentication (SASL). Never shown in output.
    type: str
"""

    CREDENTIALS = r"""
options:
  username:
    description: User name for libvirt authentication (SASL), when a URI needs one; the same for every host.
    type: str
  password:
    description: Password for libvirt authentication (SASL), the same for every host. Never shown in output.
    type: str
"""
