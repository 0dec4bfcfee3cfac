"""play_shape: which play shapes a task refuses (strategy, serial batches), and why (no Ansible run)."""
import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import play_shape

HOSTS = ["h1", "h2", "h3"]


def _params(**given):
    params = {name: spec.get("default") for name, spec in play_shape.ARGUMENT_SPEC.items()}
    params.update(given)
    return params


@pytest.mark.parametrize("needed, strategy", [
    ("linear", "linear"), ("linear", "ansible.builtin.linear"), ("linear", "debug"),
    ("host_pinned", "host_pinned"), ("host_pinned", "ansible.legacy.host_pinned"), (None, "free"),
])
def test_the_needed_strategy_and_its_equivalents_are_accepted(needed, strategy):
    assert play_shape.refusal(_params(strategy=needed, one_batch=True), strategy, [], HOSTS, HOSTS) is None


@pytest.mark.parametrize("needed, strategy", [("linear", "free"), ("linear", "host_pinned"), ("host_pinned", "linear"),
                                              ("host_pinned", "debug")])
def test_another_strategy_is_refused_with_the_reason_and_the_fix(needed, strategy):
    why = play_shape.refusal(_params(strategy=needed, strategy_reason="the steps need it"), strategy, [], HOSTS, HOSTS)
    assert why.startswith("This play needs the %s strategy and runs under strategy '%s'" % (needed, strategy))
    assert ": the steps need it." in why and "Set `strategy: %s` on the play" % needed in why


def test_batches_are_refused_only_when_one_batch_is_asked():
    why = play_shape.refusal(_params(one_batch=True, batch_reason="limits hold per run"), "linear", [1, "100%"], ["h1"], HOSTS)
    assert why.startswith("This play must run every host in one batch") and "serial 1, 100%: this batch has 1 of 3 hosts" in why
    assert ": limits hold per run." in why
    assert play_shape.refusal(_params(), "linear", [1], ["h1"], HOSTS) is None
    # serial: 100% is one batch of every host: harmless.
    assert play_shape.refusal(_params(one_batch=True), "linear", ["100%"], list(reversed(HOSTS)), HOSTS) is None
