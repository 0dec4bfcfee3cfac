"""host_canary (module_utils/host_canary_task): the parameters become one CanaryRequest (the proof itself is
module_utils/canary_run's, tested there and on the lab)."""
import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils.errors import VirtfleetError
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_options import MIGRATION_OPTIONS_SPEC
from ansible_collections.virtfleet.cluster.plugins.module_utils import host_canary_task as host_canary


def params(**extra):
    base = {name: spec.get("default") for name, spec in host_canary.ARGUMENT_SPEC.items()}
    base.update(host="hv-1", uri="qemu+tcp://hv-1/system",
                peers=[{"name": "hv-2", "uri": "qemu+tcp://hv-2/system"}, {"name": "hv-3", "uri": "qemu+tcp://hv-3/system"}])
    base.update(extra)
    return base


def test_parameters_become_the_request_with_the_runs_migration_options():
    request = host_canary.request_from(params(max_downtime_ms=250, auto_converge=True, guest="", run_id="r-1"))
    assert request.peers == {"hv-2": "qemu+tcp://hv-2/system", "hv-3": "qemu+tcp://hv-3/system"}
    assert request.guest == "" and request.memory_mib == 32 and request.run_id == "r-1"
    assert request.options.max_downtime_ms == 250 and request.options.auto_converge is True
    assert set(MIGRATION_OPTIONS_SPEC) <= set(host_canary.ARGUMENT_SPEC)


def test_a_peer_without_a_uri_is_refused_naming_it():
    with pytest.raises(VirtfleetError, match="every peer needs a name and a uri"):
        host_canary.request_from(params(peers=[{"name": "hv-2"}]))


def test_impossible_migration_options_are_refused_before_anything_runs():
    with pytest.raises(VirtfleetError, match="parallel_connections must be at least 1"):
        host_canary.request_from(params(parallel_connections=0))
