"""recovery_run: probing a host (libvirt and the SSH banner) and carrying out a restart plan.

The lab shows the whole path (tests/lab/test_recover_host.py); here small fakes give what it
cannot produce on demand: a peer that cannot be read, a start failing for another reason than a
lease, a lease refusal in the middle of the plan."""
import socket
import threading

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import libvirt_facts, recovery_run

GUEST_XML = "<domain type='kvm'><name>%s</name><memory unit='MiB'>%d</memory><vcpu>1</vcpu></domain>"


@pytest.fixture
def listener():
    """A local TCP server that sends `banner` to each client (b"" = accept and stay silent)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    state = {"banner": b"SSH-2.0-OpenSSH_9.2\r\n", "stop": False}

    def serve():
        while not state["stop"]:
            try:
                client, _address = server.accept()
            except OSError:
                return
            if state["banner"]:
                client.sendall(state["banner"])
            threading.Timer(1.0, client.close).start()
    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], state
    state["stop"] = True
    server.close()


def refuse(_uri, timeout=None):
    raise OSError("connection refused")


def test_an_ssh_banner_keeps_the_host_alive_and_stops_the_probing(listener):
    port, _state = listener
    slept = []
    verdict = recovery_run.probe_host("qemu+tcp://h/system", "127.0.0.1", port, retries=3, delay=7, timeout=1,
                                      connect=refuse, sleep=slept.append)
    assert not verdict["dead"] and len(verdict["probes"]) == 1 and slept == []
    assert verdict["probes"][0]["libvirt_error"] == "connection refused"


def test_a_silent_sshd_is_no_answer(listener):
    port, state = listener
    state["banner"] = b""  # accepted by the kernel, never served: a frozen sshd
    slept = []
    verdict = recovery_run.probe_host("qemu+tcp://h/system", "127.0.0.1", port, retries=2, delay=7, timeout=0.3,
                                      connect=refuse, sleep=slept.append)
    assert verdict["dead"] and len(verdict["probes"]) == 2 and slept == [7]
    assert "timed out" in verdict["probes"][-1]["ssh_error"]


class FakeDomain:
    def __init__(self, conn, name, fail=None):
        self.conn, self.name, self.fail = conn, name, fail

    def create(self):
        if self.fail:
            raise RuntimeError(self.fail)
        self.conn.running.append(self.name)

    def undefine(self):
        self.conn.defined.remove(self.name)


class FakePeer:
    """A peer's libvirt: what it runs, what it defines, which starts fail and how."""

    def __init__(self, running=(), failures=None):
        self.running, self.defined, self.failures = list(running), list(running), dict(failures or {})

    def lookupByName(self, name):
        if name not in self.defined:
            raise RuntimeError("Domain not found")
        return FakeDomain(self, name)

    def defineXML(self, xml):
        name = xml.split("<name>")[1].split("</name>")[0]
        self.defined.append(name)
        return FakeDomain(self, name, self.failures.get(name))

    def close(self):
        pass


def facts(peer):
    return {"memory_total_mib": 8192, "memory_free_mib": 8192, "cpus": 8,
            "guests": [{"name": name, "active": True, "memory_mib": 512, "vcpus": 1} for name in peer.running]}


def params(**overrides):
    base = {"host": "dead", "fence": "leases", "fence_confirmed": False,
            "records": [{"name": name, "host": "dead", "memory_mib": 512, "vcpus": 1, "xml": GUEST_XML % (name, 512)}
                        for name in ("g1", "g2", "g3")],
            "peers": [{"name": "p1", "uri": "test:///p1"}, {"name": "p2", "uri": "test:///p2"}],
            "priorities": {"g1": 3, "g2": 2}, "default_priority": 1, "anti_affinity_groups": {},
            "memory_overcommit": 1.0, "memory_reserve_mib": 0}
    base.update(overrides)
    return base


@pytest.fixture
def cluster(monkeypatch):
    peers = {"test:///p1": FakePeer(), "test:///p2": FakePeer()}
    monkeypatch.setattr(libvirt_facts, "gather_hypervisor_facts",
                        lambda uri, _shared=None, conn=None: facts(peers[uri]))
    return peers


def connect_to(peers):
    def connect(uri):
        if peers[uri] is None:
            raise OSError("no route to host")
        return peers[uri]
    return connect


def test_guests_start_by_priority_and_one_already_running_is_left_alone(cluster):
    cluster["test:///p2"].running.append("g2")
    result = recovery_run.recover(params(), False, connect_to(cluster))
    assert [(r["guest"], r["host"]) for r in result["restarted"]] == [("g1", "p1"), ("g3", "p1")]
    assert result["already_running"] == [{"guest": "g2", "host": "p2"}]
    assert cluster["test:///p1"].running == ["g1", "g3"] and cluster["test:///p2"].running == ["g2"]
    assert result["placement"] == {"g1": "p1", "g2": "p2", "g3": "p1"} and not result["failed_recovery"]


def test_a_held_lease_stops_the_recovery_and_leaves_nothing_defined(cluster):
    cluster["test:///p1"].failures["g1"] = "resource busy: Lockspace resource 'g1' is locked"
    result = recovery_run.recover(params(), False, connect_to(cluster))
    assert result["lease_held"]["guest"] == "g1" and result["restarted"] == [] and result["failed_recovery"]
    assert cluster["test:///p1"].defined == [] and cluster["test:///p2"].running == []
    assert "STOPPED: g1 could not start on p1 because its lease is held" in result["msg"]


def test_another_start_failure_is_reported_and_the_others_go_on(cluster):
    cluster["test:///p1"].failures["g1"] = "Cannot allocate memory"
    result = recovery_run.recover(params(), False, connect_to(cluster))
    assert result["start_failures"] == [{"guest": "g1", "host": "p1", "error": "Cannot allocate memory"}]
    assert [r["guest"] for r in result["restarted"]] == ["g2", "g3"] and result["failed_recovery"]


def test_a_peer_that_cannot_be_read_refuses_the_run(cluster):
    cluster["test:///p2"] = None
    with pytest.raises(recovery_run.RecoveryRefused, match="p2: no route to host"):
        recovery_run.recover(params(), False, connect_to(cluster))
    assert cluster["test:///p1"].running == []


def test_without_a_fence_nothing_is_read_or_started_and_check_mode_shows_the_plan(cluster):
    with pytest.raises(recovery_run.RecoveryRefused, match="no fence is confirmed"):
        recovery_run.recover(params(fence="none"), False, connect_to(cluster))
    planned = recovery_run.recover(params(fence="none"), True, connect_to(cluster))
    assert [r["guest"] for r in planned["restarted"]] == ["g1", "g2", "g3"] and not planned["changed"]
    assert cluster["test:///p1"].running == [] and cluster["test:///p2"].running == []
