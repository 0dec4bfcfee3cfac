"""host_empty: is a host safe to reboot, asked of its libvirt right before (issue 10, cases 1a and 5).

Small fakes of a libvirt connection and its domains: the states an incoming migration or a
failed switch-over leave behind cannot be produced on the lab on demand. What a reboot does to
a guest is tested on the lab (tests/lab/test_safety.py).
"""
import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import host_empty as he

RUNNING, PAUSED, SHUTOFF = 1, 3, 5


class FakeDomain:
    def __init__(self, name, state=RUNNING, reason=1, persistent=True, autostart=False, uuid=None):
        self._name, self._state, self._reason = name, state, reason
        self._persistent, self._autostart = persistent, autostart
        self._uuid = uuid or "uuid-" + name

    def name(self):
        return self._name

    def UUIDString(self):  # noqa: N802 - libvirt's name
        return self._uuid

    def isActive(self):  # noqa: N802
        return self._state != SHUTOFF

    def isPersistent(self):  # noqa: N802
        return self._persistent

    def state(self):
        return [self._state, self._reason]

    def autostart(self):
        return self._autostart

    def setAutostart(self, flag):  # noqa: N802
        self._autostart = bool(flag)


class FakeConn:
    def __init__(self, *domains):
        self.domains = list(domains)
        self.closed = False

    def listAllDomains(self, _flags):  # noqa: N802
        return list(self.domains)

    def lookupByName(self, name):  # noqa: N802
        return next(d for d in self.domains if d.name() == name)

    def close(self):
        self.closed = True


def connector(conns):
    def connect(uri):
        if isinstance(conns.get(uri), Exception):
            raise conns[uri]
        return conns[uri]
    return connect


PEERS = [{"name": "hv-2", "uri": "test:///hv-2"}, {"name": "hv-3", "uri": "test:///hv-3"}]


def test_an_empty_host_is_safe():
    found = he.check_host(FakeConn(FakeDomain("old", SHUTOFF)), PEERS, connector({}))
    assert found == {"active": [], "autostart_elsewhere": [], "autostart_unknown": []}
    assert he.refusal("hv-1", found) is None


@pytest.mark.parametrize("state,reason,shown", [
    (RUNNING, 1, "running"),
    (PAUSED, 2, "paused (migration)"),        # an incoming live migration on its destination
    (PAUSED, 6, "paused (failed migration)"),  # left behind by a failed switch-over
    (PAUSED, 1, "paused"),
])
def test_any_active_guest_refuses_the_reboot_naming_it(state, reason, shown):
    found = he.check_host(FakeConn(FakeDomain("g1", state, reason)), PEERS, connector({}))
    assert found["active"] == [{"name": "g1", "uuid": "uuid-g1", "state": shown}]
    message = he.refusal("hv-1", found)
    assert message.startswith("hv-1 is not safe to reboot: it runs g1 (%s)" % shown)
    assert "Not rebooting it" in message and "move the guests away" in message


def test_autostart_definition_of_a_guest_running_on_a_peer_refuses():
    stale = FakeDomain("g1", SHUTOFF, autostart=True, uuid="u-1")
    conns = {"test:///hv-2": FakeConn(), "test:///hv-3": FakeConn(FakeDomain("g1", uuid="u-1"))}
    found = he.check_host(FakeConn(stale), PEERS, connector(conns))
    assert found["autostart_elsewhere"] == [{"name": "g1", "uuid": "u-1", "running_on": "hv-3"}]
    assert "g1 (running on hv-3) would start a second copy at boot" in he.refusal("hv-1", found)
    assert all(c.closed for c in conns.values())


def test_autostart_definition_whose_guest_runs_nowhere_else_is_left_alone():
    own = FakeDomain("g1", SHUTOFF, autostart=True)
    found = he.check_host(FakeConn(own), PEERS, connector({"test:///hv-2": FakeConn(), "test:///hv-3": FakeConn()}))
    assert he.refusal("hv-1", found) is None


def test_a_peer_that_cannot_be_asked_leaves_the_definition_unknown():
    stale = FakeDomain("g1", SHUTOFF, autostart=True)
    conns = {"test:///hv-2": FakeConn(), "test:///hv-3": OSError("connection refused")}
    found = he.check_host(FakeConn(stale), PEERS, connector(conns))
    assert found["autostart_unknown"] == [{"name": "g1", "uuid": "uuid-g1", "unasked": ["hv-3"]}]
    assert "may run elsewhere (hv-3 could not be asked)" in he.refusal("hv-1", found)


def test_peers_are_not_asked_when_there_is_no_autostart_definition():
    def connect(_uri):
        raise AssertionError("no peer should be asked")
    found = he.check_host(FakeConn(FakeDomain("g1", SHUTOFF, autostart=False)), PEERS, connect)
    assert he.refusal("hv-1", found) is None


def _params(**extra):
    return dict({"uri": "test:///hv-1", "host": "hv-1", "peers": PEERS, "autostart_elsewhere": "refuse"}, **extra)


def test_module_disables_stale_autostart_when_asked_and_goes_on():
    stale = FakeDomain("g1", SHUTOFF, autostart=True, uuid="u-1")
    conns = {"test:///hv-1": FakeConn(stale), "test:///hv-2": FakeConn(FakeDomain("g1", uuid="u-1")),
             "test:///hv-3": FakeConn()}
    failed, result = he.safe_to_reboot(_params(autostart_elsewhere="disable"), False, connector(conns))
    assert not failed and result["changed"] and result["autostart_disabled"] == ["g1"]
    assert stale.autostart() is False and "autostart turned off for g1" in result["msg"]


def test_module_in_check_mode_reports_without_changing():
    stale = FakeDomain("g1", SHUTOFF, autostart=True, uuid="u-1")
    conns = {"test:///hv-1": FakeConn(stale), "test:///hv-2": FakeConn(FakeDomain("g1", uuid="u-1")),
             "test:///hv-3": FakeConn()}
    failed, result = he.safe_to_reboot(_params(autostart_elsewhere="disable"), True, connector(conns))
    assert not failed and result["autostart_disabled"] == ["g1"] and stale.autostart() is True


def test_module_refuses_by_default_and_disable_never_hides_an_active_guest():
    stale = FakeDomain("g1", SHUTOFF, autostart=True, uuid="u-1")
    conns = {"test:///hv-1": FakeConn(stale, FakeDomain("g2", PAUSED, 2)),
             "test:///hv-2": FakeConn(FakeDomain("g1", uuid="u-1")), "test:///hv-3": FakeConn()}
    failed, result = he.safe_to_reboot(_params(), False, connector(conns))
    assert failed and "g2 (paused (migration))" in result["msg"] and "g1 (running on hv-2)" in result["msg"]
    failed, result = he.safe_to_reboot(_params(autostart_elsewhere="disable"), False, connector(conns))
    assert failed and "g2" in result["msg"] and "g1" not in result["msg"].split("Not rebooting")[0]
