"""host_health module glue: where the previous sample is kept (only in a state directory that
proved it is the cluster's shared one), check mode keeps nothing, thresholds as options."""
import os

from ansible_collections.virtfleet.cluster.plugins.module_utils import host_health as hh
from ansible_collections.virtfleet.cluster.plugins.module_utils import maintenance_state as ms
from ansible_collections.virtfleet.cluster.plugins.module_utils import state_store as store
from ansible_collections.virtfleet.cluster.plugins.modules import health_watch_plan
from ansible_collections.virtfleet.cluster.plugins.modules import host_health as module


def params(root, storage=None, **extra):
    values = {name: spec.get("default") for name, spec in module.ARGUMENT_SPEC.items()}
    values.update(host="hv1", root=str(root), state_path=str(storage) if storage else None, cluster="c1",
                  libvirt_uri="", smartctl="virtfleet-no-such-smartctl", thresholds={})
    values.update(extra)
    return values


def edac(root, ce):
    directory = os.path.join(str(root), "sys/devices/system/edac/mc/mc0")
    os.makedirs(directory, exist_ok=True)
    for name, value in (("ce_count", ce), ("ue_count", 0)):
        with open(os.path.join(directory, name), "w") as handle:
            handle.write("%d\n" % value)


def initialised(tmp_path):
    storage = tmp_path / "storage"
    storage.mkdir()
    ms.ClusterState(store.state_dir(str(storage)), "c1").init_identity()
    return storage


def test_sample_kept_in_the_shared_state_and_rate_crosses_on_the_next_check(tmp_path):
    storage = initialised(tmp_path)
    edac(tmp_path / "root", 0)
    first = module.work(params(tmp_path / "root", storage), False)
    assert first["sample_kept"] and first["signals"]["memory_corrected"]["status"] == "baseline"
    assert os.path.exists(os.path.join(store.state_dir(str(storage)), "health", "hv1.json"))
    edac(tmp_path / "root", 1000)
    second = module.work(params(tmp_path / "root", storage), False)
    assert second["failing"] and second["worst"] == "memory_corrected"
    assert not second["sample_kept"]  # the baseline stays until min_interval old
    assert second["changed"] is False and second["msg"].startswith("hv1 FAILING: corrected memory errors")
    assert second["signals"]["libvirt"]["status"] == "not_checked"


def test_threshold_option_applies(tmp_path):
    storage = initialised(tmp_path)
    edac(tmp_path / "root", 0)
    module.work(params(tmp_path / "root", storage), False)
    edac(tmp_path / "root", 1000)
    lenient = module.work(params(tmp_path / "root", storage, thresholds={"memory_corrected_per_hour": 1e9}), False)
    assert not lenient["failing"]


def test_check_mode_keeps_no_sample(tmp_path):
    storage = initialised(tmp_path)
    edac(tmp_path / "root", 0)
    result = module.work(params(tmp_path / "root", storage), True)
    assert not result["sample_kept"]
    assert hh.load_sample(store.state_dir(str(storage)), "hv1") is None


def test_no_sample_without_the_cluster_identity_and_missing_root_is_said(tmp_path):
    storage = tmp_path / "storage"
    storage.mkdir()
    result = module.work(params(tmp_path / "absent", storage), False)
    assert not result["sample_kept"] and not os.path.exists(store.state_dir(str(storage)))
    assert any("no cluster identity file" in w for w in result["warnings"])
    assert any("does not exist" in w for w in result["warnings"])
    assert sorted(result["not_checked"]) == sorted(hh.SIGNALS)


def test_sample_not_kept_in_another_clusters_state(tmp_path):
    storage = initialised(tmp_path)
    result = module.work(params(tmp_path / "root", storage, cluster="c2"), False)
    assert not result["sample_kept"] and any("not c2" in w for w in result["warnings"])


def test_health_watch_plan_module_returns_the_plan():
    result = health_watch_plan.work({"hosts": [
        {"name": "hv1", "cluster": "c1", "max_unavailable": 2, "reachable": True, "marked": False, "mark_reason": None,
         "health": {"failing": True, "worst": "disk_health", "crossed": [{"signal": "disk_health", "why": "SMART"}]}},
        {"name": "hv2", "cluster": "c1", "max_unavailable": 2, "reachable": False, "marked": False, "health": None, "last_seen": 0.0}],
        "recover_after": 600}, False)
    assert result["drain"] == ["hv1"] and result["changed"] is False
    assert result["recover"] == ["hv2"]  # silent since 1970


def test_each_check_records_when_the_host_answered_and_reads_its_peers(tmp_path):
    storage = initialised(tmp_path)
    nobody = module.work(params(tmp_path / "root", storage, peers=["hv1", "hv2"]), False)
    assert nobody["last_seen"] == {"hv2": None}  # never answered; the host itself is not its peer
    before = hh.last_seen(store.state_dir(str(storage)), ["hv1"])["hv1"]
    module.work(params(tmp_path / "root", storage, host="hv2", peers=["hv1"]), False)
    seen = module.work(params(tmp_path / "root", storage, peers=["hv2"]), False)["last_seen"]
    assert seen["hv2"] is not None and seen["hv2"] >= before
    # Recorded at every check, not only when the sample (kept once per interval) is rewritten.
    again = module.work(params(tmp_path / "root", storage, host="hv2", peers=["hv1"]), False)
    assert not again["sample_kept"]
    assert hh.last_seen(store.state_dir(str(storage)), ["hv2"])["hv2"] > seen["hv2"]


def test_check_mode_records_no_answer(tmp_path):
    storage = initialised(tmp_path)
    module.work(params(tmp_path / "root", storage, host="hv2"), True)
    assert module.work(params(tmp_path / "root", storage, peers=["hv2"]), True)["last_seen"] == {"hv2": None}
