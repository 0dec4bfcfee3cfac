# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Does the host-to-host migration path work? Asked on the source host, before anything moves.

A peer-to-peer live migration is opened by the *source host's* libvirt daemon: it connects to
the destination URI itself, as the daemon's user (root for ``qemu:///system``), with that
user's SSH key and known_hosts (``qemu+ssh``) or the host's TLS client certificate
(``qemu+tls``). The controller's credentials play no part, so a path the controller can open
may still fail from the host, and then only at the first drain. Run on the source host as the
daemon's user, ``check_paths`` opens each peer's URI the way the daemon would and says, per
peer, whether it answers and what to fix when it does not.

The daemon has no terminal and no SSH agent, so neither may the check: an SSH URI is opened
with ``no_tty=1`` (ssh never asks a question; a missing known-hosts entry fails as it would for
the daemon) and without ``SSH_AUTH_SOCK`` (a forwarded agent would hide a missing key).
Nothing here imports Ansible.
"""
from __future__ import annotations

import concurrent.futures
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional
from urllib.parse import urlsplit

from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    LibvirtHostError, connection_hint, libvirt_message, open_connection, redact_uri, uri_secrets)

# Long enough for an SSH login plus libvirt's handshake on a loaded host, short enough that a
# silent peer (firewall dropping packets) refuses the run in seconds, not minutes.
DEFAULT_TIMEOUT_S = 20
# Peers are asked side by side: a cluster's paths cost about one login, not one per peer.
MAX_PARALLEL_CHECKS = 8


@dataclass
class PathResult:
    """One source -> destination path: whether the destination's URI answered from the source."""
    source: str
    destination: str
    uri: str  # redacted
    user: str  # who opened it on the source (the daemon's user when run as it)
    ok: bool
    seconds: float
    error: Optional[str] = None  # libvirt's words (ssh's, for an SSH URI)
    fix: Optional[str] = None

    def describe(self) -> str:
        """One line naming source, destination, URI, user, what failed and the fix."""
        return "%s -> %s (%s, opened as %s on %s): %s - fix: %s" % (
            self.source, self.destination, self.uri, self.user, self.source, self.error, self.fix)


def probe_uri(uri: str) -> str:
    """The URI as the check opens it: an SSH transport gets ``no_tty=1`` (libvirt then runs ssh
    in batch mode), since the daemon that will open it has no terminal to answer a question."""
    scheme = uri.split(":", 1)[0]
    if not scheme.endswith("+ssh") or "no_tty=" in uri.partition("?")[2]:
        return uri
    return uri + ("&" if "?" in uri else "?") + "no_tty=1"


def _transport(uri: str) -> str:
    scheme = uri.split(":", 1)[0]
    return scheme.split("+", 1)[1] if "+" in scheme else "unix"


def path_fix(error: str, uri: str, source: str, destination: str, user: str) -> str:
    """What to change, and where, for a path that failed with ``error``: the key, the
    known-hosts entry, the TLS certificate, or the listener on the destination."""
    text = error.lower()
    parts = urlsplit(uri)
    address = parts.hostname or destination
    login = "%s@%s" % (parts.username, address) if parts.username else address
    transport = _transport(uri)
    if "host key verification failed" in text or "no matching host key" in text:
        return ("%s on %s has no known_hosts entry for %s: add %s's SSH host key to ~%s/.ssh/known_hosts on %s "
                "(compare its fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on %s, then as %s "
                "on %s: ssh-keyscan %s >> ~/.ssh/known_hosts)"
                % (user, source, address, destination, user, source, destination, user, source, address))
    if "remote host identification has changed" in text or "host key for" in text and "has changed" in text:
        return ("the host key of %s changed since %s on %s recorded it: if %s was reinstalled, remove the old entry "
                "(as %s on %s: ssh-keygen -R %s) and add the new one; otherwise find out why first"
                % (address, user, source, destination, user, source, address))
    if "load key" in text:
        return ("the URI's keyfile= is not readable by %s on %s (it is someone else's key, e.g. the controller's): "
                "give %s a key of its own and leave keyfile= out of the migration URI, or point it at that key"
                % (user, source, user))
    if "permission denied" in text and ("publickey" in text or "password" in text or "keyboard" in text):
        return ("%s accepts no key of %s on %s: add the public key of %s on %s (~/.ssh/id_ed25519.pub; if there "
                "is none, create it as %s: ssh-keygen -t ed25519 -N '') to the authorized_keys of %s on %s"
                % (login, user, source, user, source, user, parts.username or "the URI's user", destination))
    if transport == "tls" and ("certificate" in text or "tls" in text or "gnutls" in text):
        return ("the TLS set-up between %s and %s: %s needs a client certificate (/etc/pki/libvirt/clientcert.pem, "
                "private/clientkey.pem) and the CA that signed %s's server certificate (/etc/pki/CA/cacert.pem); "
                "%s must trust the CA of %s's certificate and allow its DN (tls_allowed_dn_list)"
                % (source, destination, source, destination, destination, source))
    if "connection refused" in text:
        return ("nothing answers at %s on %s's %s port: is its %s running and reachable from %s (firewall: "
                "port %s/tcp from %s)?" % (address, destination, transport.upper(),
                                           "sshd" if transport == "ssh" else "libvirtd / virtproxyd socket", source,
                                           parts.port or {"ssh": 22, "tls": 16514, "tcp": 16509}.get(transport, "?"),
                                           source))
    if "no answer within" in text or "timed out" in text or "no route to host" in text or "unreachable" in text:
        return ("%s cannot reach %s at %s in time: check routing and firewalls between the hosts (the migration "
                "network) and that %s is up" % (source, destination, address, destination))
    if "name or service not known" in text or "could not resolve" in text or "temporary failure in name" in text:
        return "%s cannot resolve %s: add it to DNS or /etc/hosts on %s, or use an address" % (source, address, source)
    return connection_hint(error, uri)


def _daemon_like_environment() -> None:
    """No SSH agent: the daemon has none, and a forwarded one would vouch for a key it lacks."""
    os.environ.pop("SSH_AUTH_SOCK", None)


def check_path(source: str, peer: Mapping[str, Any], user: str, connect: Callable[[str], Any]) -> PathResult:
    uri = peer["uri"]
    began = time.monotonic()
    try:
        conn = connect(probe_uri(uri))
    except LibvirtHostError as exc:
        error = exc.reason
    except Exception as exc:  # noqa: BLE001 - any failure of one path is that path's result
        error = libvirt_message(exc)
    else:
        conn.close()
        return PathResult(source, peer["name"], redact_uri(uri), user, True, round(time.monotonic() - began, 2))
    # ssh prints its own warnings first ("Warning: Permanently added ..."): keep the whole text,
    # without the URI libvirt may repeat, on one line.
    error = error.replace(uri, redact_uri(uri))
    for secret in uri_secrets(uri):  # ssh names the keyfile it could not read
        error = error.replace(secret, "********")
    error = " ".join(error.split())
    return PathResult(source, peer["name"], redact_uri(uri), user, False, round(time.monotonic() - began, 2),
                      error, path_fix(error, uri, source, peer["name"], user))


def check_paths(source: str, peers: List[Mapping[str, Any]], user: str, timeout: float = DEFAULT_TIMEOUT_S,
                connect: Optional[Callable[[str], Any]] = None) -> List[PathResult]:
    """Opens each peer's URI from here; one PathResult per peer, in the peers' order."""
    _daemon_like_environment()
    # Read-write, as the daemon opens it (a read-only connection may take another socket).
    connect = connect or (lambda uri: open_connection(uri, timeout=timeout))
    if not peers:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_CHECKS, len(peers))) as pool:
        return list(pool.map(lambda peer: check_path(source, peer, user, connect), peers))


def summary(source: str, results: List[PathResult]) -> Dict[str, Any]:
    """The module's result: every path, and a message naming each broken one with its fix."""
    broken = [r for r in results if not r.ok]
    if broken:
        msg = ("Migration paths from %s that do not work (a live migration over them would fail): %s"
               % (source, "; ".join(r.describe() for r in broken)))
    elif results:
        msg = "%s reaches every peer's migration URI: %s" % (
            source, ", ".join("%s (%.1f s)" % (r.destination, r.seconds) for r in results))
    else:
        msg = "%s has no peer to check" % source
    return {"changed": False, "failed": bool(broken), "msg": msg, "paths": [asdict(r) for r in results],
            "broken": [r.destination for r in broken]}
