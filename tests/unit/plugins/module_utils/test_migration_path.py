"""migration_path: is the host-to-host path of a peer-to-peer migration open, and what to fix.

The paths are opened for real (libvirt's test driver, a closed port, a listener that never
answers, the ssh client); the lab test (tests/lab/test_migration_paths.py) does it host to
host over SSH. The libvirt/ssh messages given to path_fix are the ones the lab produced.
"""
import os
import socket
import threading

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import migration_path as mp


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("uri, probed", [
    ("qemu+ssh://root@kvm-02/system", "qemu+ssh://root@kvm-02/system?no_tty=1"),
    ("qemu+ssh://root@kvm-02/system?keyfile=/k", "qemu+ssh://root@kvm-02/system?keyfile=/k&no_tty=1"),
    ("qemu+ssh://root@kvm-02/system?no_tty=0", "qemu+ssh://root@kvm-02/system?no_tty=0"),
    ("qemu+tls://kvm-02/system", "qemu+tls://kvm-02/system"),
    ("qemu+tcp://127.0.1.12/session", "qemu+tcp://127.0.1.12/session"),
])
def test_an_ssh_uri_is_opened_without_a_terminal_as_the_daemon_opens_it(uri, probed):
    assert mp.probe_uri(uri) == probed


# What the lab printed for each broken path (source hv-a1, user vf-lab-hv-a1, destination hv-a2).
SSH_URI = "qemu+ssh://vf-lab-hv-a2@127.0.1.12/session"


@pytest.mark.parametrize("error, wanted", [
    ("Cannot recv data: vf-lab-hv-a2@127.0.1.12: Permission denied (publickey).: Connection reset by peer",
     ["vf-lab-hv-a2@127.0.1.12 accepts no key of vf-lab-hv-a1 on hv-a1", "ssh-keygen -t ed25519",
      "authorized_keys of vf-lab-hv-a2 on hv-a2"]),
    ("Cannot recv data: Host key verification failed.: Connection reset by peer",
     ["vf-lab-hv-a1 on hv-a1 has no known_hosts entry for 127.0.1.12", "~vf-lab-hv-a1/.ssh/known_hosts on hv-a1",
      "ssh-keyscan 127.0.1.12"]),
    ("Cannot recv data: Load key \"/var/lib/virtfleet-lab/lab/ssh/id_ed25519\": Permission denied "
     "vf-lab-hv-a2@127.0.1.12: Permission denied (publickey).: Connection reset by peer",
     ["keyfile= is not readable by vf-lab-hv-a1 on hv-a1"]),
    ("Cannot recv data: @@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@",
     ["host key of 127.0.1.12 changed", "ssh-keygen -R 127.0.1.12"]),
    ("Cannot recv data: ssh: connect to host 127.0.1.12 port 22: Connection refused: Connection reset by peer",
     ["nothing answers at 127.0.1.12 on hv-a2's SSH port", "sshd", "port 22/tcp from hv-a1"]),
    ("no answer within 20 s", ["hv-a1 cannot reach hv-a2 at 127.0.1.12 in time"]),
])
def test_each_ssh_failure_names_its_fix_and_where_to_make_it(error, wanted):
    fix = mp.path_fix(error, SSH_URI, "hv-a1", "hv-a2", "vf-lab-hv-a1")
    for text in wanted:
        assert text in fix


def test_a_tls_failure_names_the_certificates_of_both_hosts():
    fix = mp.path_fix("authentication failed: Failed to verify peer's certificate",
                      "qemu+tls://kvm-02.migration.example/system", "kvm-01", "kvm-02", "root")
    assert "kvm-01 needs a client certificate" in fix and "/etc/pki/libvirt/clientcert.pem" in fix
    assert "kvm-02 must trust the CA of kvm-01's certificate" in fix and "tls_allowed_dn_list" in fix


def test_working_and_broken_paths_are_told_apart_per_peer():
    port = _closed_port()
    peers = [{"name": "hv-ok", "uri": "test:///default"},
             {"name": "hv-closed", "uri": "qemu+tcp://127.0.0.1:%d/session" % port}]
    ok, closed = mp.check_paths("hv-src", peers, "root", timeout=10)
    assert (ok.destination, ok.ok, ok.error, ok.fix) == ("hv-ok", True, None, None)
    assert (closed.source, closed.destination, closed.ok) == ("hv-src", "hv-closed", False)
    assert "Connection refused" in closed.error
    assert "libvirtd" in closed.fix and "port %d/tcp from hv-src" % port in closed.fix
    result = mp.summary("hv-src", [ok, closed])
    assert result["failed"] and result["broken"] == ["hv-closed"]
    assert ("hv-src -> hv-closed (qemu+tcp://127.0.0.1:%d/session, opened as root on hv-src)" % port) in result["msg"]
    assert "hv-ok" not in result["msg"]


def test_a_peer_that_accepts_but_never_answers_fails_within_the_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    try:
        (result,) = mp.check_paths("hv-src", [{"name": "hv-frozen", "uri": "qemu+tcp://127.0.0.1:%d/session"
                                              % listener.getsockname()[1]}], "root", timeout=1)
    finally:
        listener.close()
    assert not result.ok and result.error == "no answer within 1 s" and result.seconds < 5
    assert "hv-src cannot reach hv-frozen" in result.fix


def test_an_ssh_path_is_checked_without_the_callers_agent_and_hides_the_keyfile(monkeypatch):
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/forwarded-agent.sock")
    uri = "qemu+ssh://nobody@127.0.0.1:%d/system?keyfile=/secret/place/id_ed25519" % _closed_port()
    (result,) = mp.check_paths("hv-src", [{"name": "hv-dst", "uri": uri}], "root", timeout=10)
    assert "SSH_AUTH_SOCK" not in os.environ  # the daemon has no agent either
    assert not result.ok and "Connection refused" in result.error
    assert "/secret/place" not in result.error + result.uri + result.fix
    assert "keyfile=********" in result.uri


def test_no_peer_is_nothing_to_refuse():
    assert mp.summary("hv-alone", mp.check_paths("hv-alone", [], "root")) == {
        "changed": False, "failed": False, "msg": "hv-alone has no peer to check", "paths": [], "broken": []}
