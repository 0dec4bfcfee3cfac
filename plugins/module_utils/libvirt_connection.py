# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Everything about reaching a libvirt daemon, in one place.

The one opener (`open_connection`: bounded open, keepalive, a hint for each kind of failure),
URI redaction (`redact_uri`, `uri_secrets`), the text of a libvirt error (`libvirt_message`),
the short host name of a URI for messages (`host_label`), the one map of guest states
(`GUEST_STATES`) and the numeric values of the libvirt constants the collection uses, so the
pure code (flag mapping, decision tables) works and is testable without libvirt-python.

Every message that shows a URI shows it through `redact_uri`, so a password embedded in a
URI never reaches Ansible output. Nothing here imports Ansible.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Callable, List, Mapping, Optional
from urllib.parse import urlsplit

from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError

try:
    import libvirt  # type: ignore
    HAS_LIBVIRT = True
    LIBVIRT_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the controller
    libvirt = None
    HAS_LIBVIRT = False
    LIBVIRT_IMPORT_ERROR = exc

# Numeric values of libvirt's constants (asserted equal to libvirt's own in the unit tests).
VIR_MIGRATE_LIVE = 1
VIR_MIGRATE_PEER2PEER = 2
VIR_MIGRATE_PERSIST_DEST = 8
VIR_MIGRATE_UNDEFINE_SOURCE = 16
VIR_MIGRATE_NON_SHARED_DISK = 64
VIR_MIGRATE_AUTO_CONVERGE = 8192
VIR_MIGRATE_POSTCOPY = 32768
VIR_MIGRATE_PARALLEL = 131072

VIR_DOMAIN_JOB_NONE = 0
VIR_DOMAIN_JOB_COMPLETED = 3
VIR_DOMAIN_JOB_FAILED = 4
VIR_DOMAIN_JOB_CANCELLED = 5
VIR_DOMAIN_JOB_STATS_COMPLETED = 1
VIR_DOMAIN_RUNNING = 1
VIR_DOMAIN_PAUSED = 3
VIR_DOMAIN_PAUSED_MIGRATION = 2
VIR_DOMAIN_PAUSED_POSTCOPY = 12
VIR_DOMAIN_PAUSED_POSTCOPY_FAILED = 13
VIR_ERR_NO_DOMAIN = 42
VIR_CONNECT_LIST_DOMAINS_ACTIVE = 1

# virDomainState values, named as virsh names them.
GUEST_STATES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown",
                5: "shutoff", 6: "crashed", 7: "pmsuspended"}


def state_name(state: int) -> str:
    """The name of a virDomainState value (``state 9`` for one libvirt added later)."""
    return GUEST_STATES.get(state, "state %s" % state)


class LibvirtHostError(VirtfleetError):
    """A libvirt daemon could not be asked: names the (redacted) URI and what to do about it.

    ``reason`` is libvirt's own words without the URI and the hint, for callers that give a
    hint of their own (a host-to-host path is fixed on the source host, not on the controller).
    """

    def __init__(self, message: str, result: Optional[dict] = None, reason: Optional[str] = None):
        super().__init__(message, result)
        self.reason = reason or message


def libvirt_message(exc: BaseException) -> str:
    """The text of a libvirt error (its own message, not the wrapper's), or of any error."""
    if HAS_LIBVIRT and isinstance(exc, libvirt.libvirtError):
        return exc.get_error_message() or str(exc)
    return str(exc)


def host_label(uri: str) -> str:
    """Short host name for messages, derived from a libvirt URI (never prints the URI itself:
    it may carry user names, key paths or other things that don't belong in logs)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "?"
    return parts.hostname or "localhost"


# --- URIs --------------------------------------------------------------------------------------

_SECRET_QUERY = re.compile(r"([?&](?:[^=&]*(?:pass|secret|token|key)[^=&]*)=)[^&]*", re.IGNORECASE)
_USERINFO_PASSWORD = re.compile(r"^([a-z0-9+.-]+://[^/@:]*):[^/@]*@", re.IGNORECASE)


def redact_uri(uri: Optional[str]) -> Optional[str]:
    """Hides a password in `user:password@host` and secret-looking query parameters."""
    if not uri:
        return uri
    uri = _USERINFO_PASSWORD.sub(r"\1:********@", uri)
    return _SECRET_QUERY.sub(r"\1********", uri)


def uri_secrets(uri: Optional[str]) -> List[str]:
    """Every secret a URI carries: the password of `user:password@host` and the values of
    secret-looking query parameters (`apikey=`, `secretkey=`, `*pass*`, `*token*`), so a
    module can mask them wherever Ansible prints arguments or results (`-vvv` too)."""
    secrets = [uri_password(uri)]
    query = (uri or "").partition("?")[2]
    for name, _sep, value in (part.partition("=") for part in query.split("&")):
        if re.search(r"pass|secret|token|key", name, re.IGNORECASE):
            secrets.append(value)
    return [secret for secret in secrets if secret]


def uri_password(uri: Optional[str]) -> Optional[str]:
    """The password embedded in `user:password@host` of a URI, or None (to mask it in output)."""
    match = re.match(r"^[a-z0-9+.-]+://[^/@:]*:([^/@]*)@", uri or "", re.IGNORECASE)
    return match.group(1) if match and match.group(1) else None


def connection_hint(message: str, uri: str) -> str:
    """Turns a libvirt connection error into the most likely fix."""
    text = message.lower()
    if "connection refused" in text:
        return "is libvirtd running on that host and listening on this transport (libvirtd --listen, or virtproxyd-tcp/-tls.socket)?"
    if "no route to host" in text or "network is unreachable" in text or "timed out" in text:
        return "the host is unreachable from the controller: check the address and firewalls"
    if "name or service not known" in text or "unknown host" in text or "temporary failure in name resolution" in text:
        return "the host name does not resolve: check ansible_host / virtfleet_libvirt_uri"
    if "no such file or directory" in text and "sock" in text:
        return "no libvirt daemon socket on this machine: start libvirtd (or the modular daemons) or use a remote URI"
    if "permission denied" in text or "authentication" in text or "auth" in text and "fail" in text:
        return "authentication failed: check the SSH key / SASL credentials / TLS certificates for this URI"
    if "host key verification failed" in text:
        return "SSH host key verification failed: add the host key to known_hosts on the controller"
    if "certificate" in text:
        return "TLS certificate problem: check the CA and client certificates (pkipath)"
    if uri.startswith("qemu+ssh") and ("nc" in text or "virt-ssh-helper" in text):
        return "the remote side has no libvirt client tools (virt-ssh-helper / nc): install libvirt-clients there"
    return "check that the URI is right and the daemon is reachable (virsh -c URI version)"


# A call to a daemon that stopped answering (host frozen, network cut, daemon stopped) waits for
# ever unless the connection runs libvirt's keepalive: the client then gives up after
# KEEPALIVE_INTERVAL_S * (KEEPALIVE_COUNT + 1) seconds without an answer and the call fails
# with an error. virsh uses the same 5 s x 6; a busy daemon still answers keepalive from its
# event loop, so a long migration is never cut by it.
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 6
_EVENT_LOOP_LOCK = threading.Lock()
_event_loop = []  # the thread running libvirt's default event loop, once started


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def ensure_event_loop() -> None:
    """Keepalive needs an event loop registered before connections open: libvirt's default
    one, run by a daemon thread, started once per process."""
    with _EVENT_LOOP_LOCK:
        if _event_loop:
            return
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run_event_loop, name="libvirt-event-loop", daemon=True)
        thread.start()
        _event_loop.append(thread)


# Keepalive only starts once a connection is open: the opening handshake with a daemon that
# accepted the TCP connection but never answers (frozen) would wait for ever, so it is bounded.
OPEN_TIMEOUT_S = 60


def open_connection(uri: str, username: Optional[str] = None, password: Optional[str] = None,
                    readonly: bool = False, timeout: float = OPEN_TIMEOUT_S):
    """Opens a libvirt connection with keepalive, or raises LibvirtHostError naming the URI
    and the fix, also when the daemon does not answer within ``timeout`` seconds.

    Read-write by default: CPU baseline and comparison refuse read-only connections.
    """
    if not HAS_LIBVIRT:
        raise LibvirtHostError("the libvirt Python bindings are missing on the controller (pip install "
                               "libvirt-python, needs libvirt-dev): %s" % LIBVIRT_IMPORT_ERROR)
    # libvirt prints every error to stderr by default; we report them ourselves.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    ensure_event_loop()
    outcome: dict = {}
    lock = threading.Lock()

    def attempt():
        try:
            conn = _open(uri, username, password, readonly)
        except Exception as exc:  # handed to the caller's thread
            conn, outcome["error"] = None, exc
        with lock:
            if "abandoned" in outcome and conn is not None:
                conn.close()  # answered after the caller gave up: nobody will use it
            outcome["conn"] = conn

    opener = threading.Thread(target=attempt, name="libvirt-open", daemon=True)
    opener.start()
    opener.join(timeout)
    with lock:
        if "conn" not in outcome:
            outcome["abandoned"] = True
            raise LibvirtHostError(
                "cannot connect to %s: no answer within %d s - the libvirt daemon or its host is"
                " frozen or overloaded: check it (virsh -c URI version) and restart libvirtd there"
                % (redact_uri(uri), timeout), reason="no answer within %d s" % timeout)
    if "error" in outcome:
        raise outcome["error"]
    conn = outcome["conn"]
    try:
        conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
    except libvirt.libvirtError:
        pass  # an in-process driver (test:///) has no daemon to lose and no keepalive
    return conn


def _open(uri: str, username: Optional[str], password: Optional[str], readonly: bool):
    try:
        if username is not None or password is not None:
            def request_credentials(credentials, _data):
                for cred in credentials:
                    if cred[0] == libvirt.VIR_CRED_AUTHNAME:
                        cred[4] = username
                    elif cred[0] == libvirt.VIR_CRED_PASSPHRASE:
                        cred[4] = password
                return 0
            auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], request_credentials, None]
            flags = libvirt.VIR_CONNECT_RO if readonly else 0
            conn = libvirt.openAuth(uri, auth, flags)
        elif readonly:
            conn = libvirt.openReadOnly(uri)
        else:
            conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        message = str(exc)
        if password:
            message = message.replace(password, "********")
        raise LibvirtHostError("cannot connect to %s: %s - %s" % (redact_uri(uri), message, connection_hint(message, uri)),
                               reason=message)
    if conn is None:
        raise LibvirtHostError("cannot connect to %s: libvirt returned no connection" % redact_uri(uri))
    return conn


# --- the connection options of a module ---------------------------------------------------------

# Run on a hypervisor host, a module reaches that host's own libvirt (as community.libvirt does);
# from the controller, a play passes the host's virtfleet_libvirt_uri.
DEFAULT_URI = "qemu:///system"

# Credentials for libvirt's SASL authentication, the same for every host a module connects to.
# A URI stays visible: run_module masks only the secrets it embeds (see uri_secrets).
CREDENTIALS_ARGUMENT_SPEC = {
    "username": {"type": "str"},
    "password": {"type": "str", "no_log": True},
}

# The options of every module that talks to one libvirt daemon; documented by the doc fragment
# virtfleet.cluster.libvirt_connection, settable once per play through the action group
# group/virtfleet.cluster.libvirt (meta/runtime.yml).
CONNECTION_ARGUMENT_SPEC = {
    "uri": {"type": "str", "default": DEFAULT_URI},
    **CREDENTIALS_ARGUMENT_SPEC,
}


def connector(params: Mapping[str, Any]) -> Callable[[str], Any]:
    """An opener of ``uri`` with the credentials of a module's parameters, for code that
    connects to several hosts (peers, a cluster) the same way."""
    username, password = params.get("username"), params.get("password")
    return lambda uri: open_connection(uri, username, password)
