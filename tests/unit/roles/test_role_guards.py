"""Guards of the rolling_maintenance role that need no lab: ansible-playbook runs the role's
task files on localhost (ansible_connection=local, fake cluster variables).

* The role refuses a play that runs its hosts in several batches (serial) or under a strategy
  other than linear, before anything else happens (no report, no lock, no libvirt call), and
  its use from `roles:` in one play (it runs in three plays), saying how to run it.
* The downtime-budget template of tasks/drain.yml copes with a completed migration whose stats
  have no downtime (null or missing).
* The default "anything to patch" check refreshes the package lists before deciding (a private
  APT configuration with a local repository; a fake dnf).
* The reboot runs with become unless the inventory says ansible_become: false.
* The canary fails closed without a peer in service (or a named guest that cannot move), is by
  default the collection's own and migrates with the run's migration options (peers are
  libvirt's test driver).
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
ROLE = os.path.join(REPO, "roles", "rolling_maintenance")
VENV_BIN = os.path.dirname(sys.executable)
GUARD_MESSAGE_SERIAL = "must run every host in one batch"
GUARD_MESSAGE_STRATEGY = "needs the linear strategy"


def _env(**extra):
    env = dict(os.environ)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env["ANSIBLE_CONFIG"] = os.path.join(REPO, "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    env.pop("ANSIBLE_STRATEGY", None)
    env.update(extra)
    return env


def _inventory(tmp_path, hosts=("kvm-a", "kvm-b")):
    """Two fake hypervisors of one cluster, both the controller itself (no libvirt answers)."""
    inventory = {"all": {"hosts": {name: {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "virtfleet_cluster": "fake",
        "virtfleet_libvirt_uri": "qemu+tcp://127.0.0.1:1/session",
        "virtfleet_storage": {"path": str(tmp_path / "shared")}} for name in hosts}}}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def _playbook(tmp_path, play_keywords, tasks_from=None, name="play.yml"):
    play = {"name": "guarded play", "hosts": "all", "gather_facts": False}
    play.update(play_keywords)
    if tasks_from:
        play["tasks"] = [{"name": "The role's guard alone", "ansible.builtin.include_role": {
            "name": "virtfleet.cluster.rolling_maintenance", "tasks_from": tasks_from}}]
    else:
        play["roles"] = [{"role": "virtfleet.cluster.rolling_maintenance"}]
    path = tmp_path / name
    path.write_text(yaml.safe_dump([play], sort_keys=False))
    return path


def _run(tmp_path, playbook, env=None, timeout=180):
    reports = tmp_path / "reports"
    command = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", str(_inventory(tmp_path)), str(playbook),
               "-e", json.dumps({"rolling_maintenance_reports_dir": str(reports)})]
    result = subprocess.run(command, cwd=REPO, env=env or _env(), capture_output=True, text=True,
                            timeout=timeout, check=False)
    return result.returncode, result.stdout + result.stderr, reports


# --------------------------------------------------------------------------- serial / strategy
def test_role_refuses_serial_before_anything_else(tmp_path):
    """The whole role under serial: 1 is refused by its first task, naming serial and the fix."""
    rc, output, reports = _run(tmp_path, _playbook(tmp_path, {"serial": 1}))
    assert rc != 0, output[-4000:]
    assert GUARD_MESSAGE_SERIAL in output, output[-4000:]
    assert "serial" in output and "virtfleet_max_unavailable" in output
    # Before anything else: no run set up, no report written, no shared state created.
    assert "Set up the run" not in output and "Preflight" not in output, output[-4000:]
    assert not reports.exists()
    assert not (tmp_path / "shared").exists()


def test_role_refuses_the_free_strategy_before_anything_else(tmp_path):
    rc, output, reports = _run(tmp_path, _playbook(tmp_path, {"strategy": "free"}))
    assert rc != 0, output[-4000:]
    assert GUARD_MESSAGE_STRATEGY in output and "'free'" in output, output[-4000:]
    assert "Set up the run" not in output
    assert not reports.exists()


def test_role_in_one_play_is_refused_with_the_way_to_run_it(tmp_path):
    """`roles:` in one linear play cannot keep each cluster on its own clock: refused before
    anything is set up, naming the collection's playbook and the three entry points."""
    rc, output, reports = _run(tmp_path, _playbook(tmp_path, {}))
    assert rc != 0, output[-4000:]
    text = " ".join(output.split())
    assert "no longer runs from `roles:` in one play" in text, output[-4000:]
    assert "import_playbook: virtfleet.cluster.rolling_maintenance" in text and "play_maintain (strategy host_pinned)" in text
    assert "Set up the run" not in output and not reports.exists()


@pytest.mark.parametrize("play_keywords, env, refused", [
    ({}, {}, None),                                              # linear by default: accepted
    ({"strategy": "linear"}, {}, None),
    ({"strategy": "ansible.builtin.linear"}, {}, None),
    ({"serial": "100%"}, {}, None),                              # one batch of every host: harmless
    ({"serial": 1}, {}, GUARD_MESSAGE_SERIAL),
    ({"serial": [1, "100%"]}, {}, GUARD_MESSAGE_SERIAL),
    ({"strategy": "host_pinned"}, {}, GUARD_MESSAGE_STRATEGY),
    ({}, {"ANSIBLE_STRATEGY": "free"}, GUARD_MESSAGE_STRATEGY),  # from the configuration, not the play
])
def test_guard_task_file(tmp_path, play_keywords, env, refused):
    """tasks/refuse_unsupported_play.yml alone: refuses exactly the unsupported plays."""
    playbook = _playbook(tmp_path, play_keywords, tasks_from="refuse_unsupported_play")
    rc, output, _reports = _run(tmp_path, playbook, env=_env(**env))
    if refused:
        assert rc != 0 and refused in output, output[-4000:]
    else:
        assert rc == 0, output[-4000:]
        assert GUARD_MESSAGE_SERIAL not in output and GUARD_MESSAGE_STRATEGY not in output


# --------------------------------------------------------------------------- downtime budget
def _role_tasks(file_name, *names):
    """The named tasks of one of the role's task files, as written there (includes made absolute)."""
    tasks = yaml.safe_load(open(os.path.join(ROLE, "tasks", file_name)))
    found = {}

    def walk(items):
        for task in items:
            if task.get("name") in names:
                found[task["name"]] = task
            walk(task.get("block", []))
    walk(tasks)
    assert sorted(found) == sorted(names), "tasks missing from tasks/%s: %s" % (file_name, set(names) - set(found))
    out = []
    for name in names:
        task = dict(found[name])
        if "ansible.builtin.include_tasks" in task:
            task["ansible.builtin.include_tasks"] = os.path.join(ROLE, "tasks", task["ansible.builtin.include_tasks"])
        out.append(task)
    return out


BUDGET_TASKS = ("Drain - hold every guest to the downtime budget", "Drain - stop the run when a guest's downtime exceeded the budget")


def _migrated(guest, result):
    return {"guest": guest, "source": "kvm-a", "destination": "kvm-b", "status": "migrated", "result": result}


def _run_budget(tmp_path, migrations, budget_ms):
    play = {"name": "budget", "hosts": "kvm-a", "gather_facts": False,
            "vars": {"rolling_maintenance_downtime_budget_ms": budget_ms,
                     "__rolling_maintenance_report_dir": str(tmp_path),
                     "__rolling_maintenance_drain": {"failed": False, "migrations": migrations}},
            "tasks": list(_role_tasks("drain.yml", *BUDGET_TASKS)) + [
                {"name": "Show the verdict", "ansible.builtin.debug": {"msg": "OVER BUDGET: {{ __rolling_maintenance_over_budget | default('unset') }}"}}]}
    playbook = tmp_path / "budget.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    return _run(tmp_path, playbook)


def test_budget_copes_with_migrations_whose_stats_lack_downtime(tmp_path):
    """libvirt may complete a migration without a downtime figure (null, or no key): not a crash."""
    migrations = [_migrated("g-null", {"downtime_ms": None, "total_time_ms": 900}),
                  _migrated("g-missing", {"total_time_ms": 800}),
                  _migrated("g-no-stats", None),
                  _migrated("g-fast", {"downtime_ms": 40}),
                  {"guest": "g-failed", "source": "kvm-a", "status": "failed", "result": None, "error": "boom"}]
    rc, output, _reports = _run_budget(tmp_path, migrations, 100)
    assert rc == 0, output[-4000:]
    assert "OVER BUDGET: []" in output, output[-4000:]
    assert not (tmp_path / "run-stopped").exists()


def test_budget_names_only_the_guests_above_it(tmp_path):
    migrations = [_migrated("g-null", {"downtime_ms": None}), _migrated("g-slow", {"downtime_ms": 450}),
                  _migrated("g-fast", {"downtime_ms": 40})]
    rc, output, _reports = _run_budget(tmp_path, migrations, 100)
    assert rc != 0, output[-4000:]
    assert "Downtime budget of 100 ms per guest exceeded on kvm-a: g-slow 450 ms (drain to kvm-b)" in output, output[-4000:]
    assert "g-null" not in output.split("exceeded on kvm-a:")[1].split("\n")[0]
    # The whole run stops: every host waiting for a slot reads this file (tasks/slot.yml).
    assert (tmp_path / "run-stopped").read_text() == "kvm-a"


# --------------------------------------------------------------------------- package lists
FAKE_PACKAGE = "base-files"  # installed on every Debian system, no dependencies of its own


def _fake_apt(tmp_path):
    """A private APT configuration on this (Debian) machine: its own sources, lists and cache, with one
    local repository offering a newer FAKE_PACKAGE. Its lists start empty: stale, as on a host whose
    lists were not refreshed since the update appeared. Nothing of the system's APT state is touched."""
    root = tmp_path / "apt"
    for sub in ("repo", "lists/partial", "cache/archives/partial", "sources.list.d"):
        (root / sub).mkdir(parents=True)
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    (root / "repo" / "Packages").write_text(textwrap.dedent("""\
        Package: %s
        Version: 999.0
        Architecture: %s
        Maintainer: virtfleet tests <tests@example.invalid>
        Installed-Size: 1
        Filename: ./fake_999.0.deb
        Size: 1000
        SHA256: %s
        Description: a newer version that only refreshed package lists know

        """) % (FAKE_PACKAGE, arch, "0" * 64))
    (root / "sources.list").write_text("deb [trusted=yes] file:%s ./\n" % (root / "repo"))
    config = root / "apt.conf"
    config.write_text("".join('%s "%s";\n' % item for item in (
        ("Dir::Etc::SourceList", root / "sources.list"), ("Dir::Etc::SourceParts", root / "sources.list.d"),
        ("Dir::State::Lists", root / "lists"), ("Dir::Cache", root / "cache"), ("Acquire::Languages", "none"))))
    return config


def _apt_usable():
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/apt-get") or not os.path.exists("/var/lib/dpkg/status"):
        return False
    probe = subprocess.run(["/usr/bin/python3", "-c", "import apt, apt_pkg"], capture_output=True, check=False)
    return probe.returncode == 0 and subprocess.run(["dpkg", "-s", FAKE_PACKAGE], capture_output=True, check=False).returncode == 0


def _run_check_updates(tmp_path, valid_time, check_mode=False):
    check = {"name": "The role's default check",
             "ansible.builtin.include_role": {"name": "virtfleet.cluster.rolling_maintenance", "tasks_from": "check_updates"}}
    verdict = {"name": "Show the verdict", "ansible.builtin.debug": {
        "msg": "NEEDS PATCH: {{ rolling_maintenance_needs_patch }} PENDING: {{ rolling_maintenance_pending_updates | length }}"}}
    play = {"name": "check", "hosts": "kvm-a", "gather_facts": False,
            "vars": {"ansible_become": False,  # the controller itself, already root (no sudo needed)
                     "rolling_maintenance_package_cache_valid_time": valid_time},
            "tasks": [check, verdict]}
    playbook = tmp_path / "check.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    env = _env(APT_CONFIG=str(_fake_apt(tmp_path)))
    command = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", str(_inventory(tmp_path)), str(playbook)]
    if check_mode:
        command.append("--check")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.skipif(not _apt_usable(), reason="needs root on a Debian system with python3-apt (a private APT configuration is used)")
@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check_mode"])
def test_check_updates_refreshes_stale_package_lists(tmp_path, check_mode):
    """An update published after the host's lists were last refreshed is found (also in a dry run)."""
    rc, output = _run_check_updates(tmp_path, valid_time=0, check_mode=check_mode)
    assert rc == 0, output[-4000:]
    assert "NEEDS PATCH: True PENDING: 1" in output, output[-4000:]


@pytest.mark.skipif(not _apt_usable(), reason="needs root on a Debian system with python3-apt (a private APT configuration is used)")
def test_check_updates_keeps_lists_younger_than_the_validity(tmp_path):
    """rolling_maintenance_package_cache_valid_time: lists refreshed less long ago are used as they are
    (the apt module dates them by the system's own update stamp); a very long validity never refreshes."""
    rc, output = _run_check_updates(tmp_path, valid_time=10 ** 9)
    assert rc == 0, output[-4000:]
    assert "NEEDS PATCH: False PENDING: 0" in output, output[-4000:]


# --------------------------------------------------------------------------- become for the reboot
REBOOT_TASK = "Reboot - reboot the host, which runs no guest and would start none twice (asked right before)"


def _rebootable_local_connection(directory):
    """The local connection under another name: ansible.builtin.reboot refuses `local` (it would
    reboot the controller); here the reboot command only records who ran it."""
    import ast
    from ansible.plugins.connection import local
    source = open(local.__file__).read()
    documentation = next(node.value.value for node in ast.parse(source).body if isinstance(node, ast.Assign)
                         and getattr(node.targets[0], "id", None) == "DOCUMENTATION")
    (directory / "rebootable_local.py").write_text(
        "from __future__ import annotations\n"
        "DOCUMENTATION = %r\n"
        "from ansible.plugins.connection.local import Connection as _Local\n\n\n"
        "class Connection(_Local):\n    transport = 'rebootable_local'\n"
        % documentation.replace("name: local", "name: rebootable_local", 1))
    return directory


def _run_reboot_task(tmp_path, inventory_become=None):
    """The role's reboot task (tasks/host.yml) on the controller, with a reboot command that only
    records which user ran it; become is su to `nobody`, so the record tells whether it was used."""
    plugins = tmp_path / "connection_plugins"
    plugins.mkdir()
    _rebootable_local_connection(plugins)
    # Outside pytest's private (0700) tree: `nobody` writes its name here.
    record_dir = tempfile.mkdtemp(prefix="virtfleet-reboot-")
    os.chmod(record_dir, 0o777)  # noqa: S103
    record = os.path.join(record_dir, "reboot-ran-as")
    try:
        return _run_recorded_reboot(tmp_path, plugins, record, inventory_become)
    finally:
        shutil.rmtree(record_dir, ignore_errors=True)


def _run_recorded_reboot(tmp_path, plugins, record, inventory_become):
    # The host's libvirt, asked first: libvirt's test driver with a node that runs no guest.
    node = tmp_path / "empty-node.xml"
    node.write_text(NODE % "")
    host_vars = {"ansible_connection": "rebootable_local",
                 "virtfleet_libvirt_uri": "test://%s" % node, "__rolling_maintenance_peers": [],
                 "ansible_python_interpreter": "/usr/bin/python3",  # a Python that `nobody` may run
                 "ansible_become_user": "nobody", "ansible_become_method": "su", "ansible_become_flags": "-s /bin/sh",
                 "reboot_command": "sh -c 'id -un > %s'" % record, "boot_time_command": "date +%s%N",
                 "test_command": "true", "rolling_maintenance_reboot_timeout": 60,
                 "rolling_maintenance_always_reboot": True, "__rolling_maintenance_run_id": "test"}
    if inventory_become is not None:
        host_vars["ansible_become"] = inventory_become
    play = {"name": "reboot", "hosts": "kvm-a", "gather_facts": False, "vars": host_vars,
            "tasks": list(_role_tasks("host.yml", REBOOT_TASK))}
    playbook = tmp_path / "reboot.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    rc, output, _reports = _run(tmp_path, playbook, env=_env(ANSIBLE_CONNECTION_PLUGINS=str(plugins)))
    return rc, output, (open(record).read().strip() if os.path.exists(record) else None)


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"), reason="needs root (su to nobody)")
def test_reboot_runs_with_become_unless_the_inventory_says_no(tmp_path):
    """docs/production.md: the role reboots with become (sudo). An inventory that sets
    ansible_become: false (the lab: unprivileged users without sudo) reboots without it."""
    rc, output, ran_as = _run_reboot_task(tmp_path)
    assert rc == 0, output[-4000:]
    assert ran_as == "nobody", output[-4000:]       # the become user: become was used


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"), reason="needs root (su to nobody)")
def test_reboot_without_become_where_the_inventory_says_so(tmp_path):
    rc, output, ran_as = _run_reboot_task(tmp_path, inventory_become=False)
    assert rc == 0, output[-4000:]
    assert ran_as == "root", output[-4000:]


# --------------------------------------------------------------------------- canary
# The peers are libvirt's test driver (test:///<file>): real libvirt connections answering with
# the guests of a node file, so the canary's choice runs on real hypervisor_facts output.
NODE = """<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads><active>2</active><mhz>2000</mhz><model>i686</model></cpu>
  <memory>8388608</memory>
%s</node>
"""
GUEST = """  <domain type="test" xmlns:test="http://libvirt.org/schemas/domain/test/1.0">
    <name>%(name)s</name><memory>%(kib)d</memory><vcpu>1</vcpu><os><type>hvm</type></os>
    <devices><disk type='file' device='disk'><source file='%(disk)s'/><target dev='vda'/></disk></devices>
    %(extra)s
  </domain>
"""


CANARY_RUN_TOKEN = "c" * 32


def _canary_play(tmp_path, peers, marked_since_drain=(), unreachable=(), options=None, extra_vars=None):
    """kvm-a (rebooted, in its canary turn) and peers {name: [guest dicts]}; returns (rc, output)."""
    shared = tmp_path / "shared"
    shared.mkdir(exist_ok=True)
    inventory = {"kvm-a": "test:///default"}
    for peer, guests in peers.items():
        node = tmp_path / ("%s.xml" % peer)
        node.write_text(NODE % "".join(GUEST % dict({"kib": 131072, "extra": "", "disk": str(shared / (g["name"] + ".img"))}, **g)
                                       for g in guests))
        inventory[peer] = "test://%s" % node
    for peer in unreachable:
        inventory[peer] = "test:///%s/absent-node.xml" % tmp_path
    members = sorted(inventory)
    hosts = {name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "virtfleet_cluster": "fake",
                    "virtfleet_libvirt_uri": uri, "virtfleet_storage": {"path": str(shared)}} for name, uri in inventory.items()}
    (tmp_path / "canary-inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    # The state directory proves it is the cluster's shared one (identity file) before anything is
    # written there, and the run holds the cluster's lock (host_canary takes the move turn under it): a
    # preflight does both in a run.
    marks = [{"name": "The cluster's state directory, as a preflight leaves it", "virtfleet.cluster.maintenance_state": {
        "path": str(shared), "cluster": "fake", "state": "init"}},
        {"name": "The run's lock, as a preflight takes it", "virtfleet.cluster.maintenance_state": {
            "path": str(shared), "cluster": "fake", "state": "lock", "run_id": "test-run", "token": CANARY_RUN_TOKEN}}]
    marks += [{"name": "An operator marked %s after the drain" % peer, "virtfleet.cluster.maintenance_state": {
        "path": str(shared), "cluster": "fake", "state": "mark", "host": peer, "run_id": "operator", "reason": "fan replacement"}}
        for peer in marked_since_drain]
    play_vars = {
        "__rolling_maintenance_cluster": {"name": "fake", "members": members, "state_path": str(shared)},
        "__rolling_maintenance_report_dir": str(tmp_path / "report"),
        "__rolling_maintenance_run_id": "test-run",
        "__rolling_maintenance_token": CANARY_RUN_TOKEN,
        "__rolling_maintenance_event_base": {"cluster": "fake", "host": "kvm-a"},
        "__rolling_maintenance_task_report": {"directory": str(tmp_path / "report"), "run_id": "test-run",
                                              "about": {"cluster": "fake", "host": "kvm-a"}},
        "rolling_maintenance_migration_options": options or {},
    }
    play_vars.update(extra_vars or {})
    canary = {"name": "The role's canary",
              "ansible.builtin.include_role": {"name": "virtfleet.cluster.rolling_maintenance", "tasks_from": "canary"}}
    tried = {"name": "Show whether a migration was tried", "ansible.builtin.debug": {
        "msg": "MIGRATION TRIED: {{ (__rolling_maintenance_canary.migrations | default([]) | length) > 0 }}"}}
    fail = {"name": "Fail as the role would", "ansible.builtin.fail": {"msg": "{{ ansible_failed_result.msg }}"}}
    # What host.yml's block sets for the files it includes.
    defaults = {"virtfleet.cluster.maintenance_state": {"path": str(shared), "cluster": "fake", "host": "kvm-a", "run_id": "test-run"}}
    play = {"name": "canary", "hosts": "kvm-a", "gather_facts": False, "vars": play_vars,
            "tasks": marks + [{"name": "Canary turn", "module_defaults": defaults, "block": [canary], "rescue": [tried, fail]}]}
    playbook = tmp_path / "canary.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    command = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", str(tmp_path / "canary-inventory.yml"), str(playbook)]
    # -vvv: a task's result then shows the arguments the module was given (invocation.module_args).
    result = subprocess.run(command + ["-vvv"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180, check=False)
    return result.returncode, result.stdout + result.stderr


def test_canary_without_a_peer_in_service_fails_closed_and_says_why(tmp_path):
    """No peer can start the owned canary (marked since the drain, or its libvirt down): every
    peer is named with the reason, and the host is failed (stays marked: host.yml's rescue),
    never "skipped" into service."""
    rc, output = _canary_play(tmp_path, {"kvm-d": [{"name": "good-but-marked", "kib": 65536}]},
                              marked_since_drain=["kvm-d"], unreachable=["kvm-e"])
    assert rc != 0, output[-4000:]
    text = " ".join(output.split())
    assert "No canary for kvm-a" in text and "can start the canary" in text, output[-4000:]
    for expected in ("kvm-d: marked in maintenance (run operator", "fan replacement", "kvm-e: its libvirt did not answer",
                     "rolling_maintenance_canary: false"):
        assert expected in text, (expected, output[-4000:])
    assert "MIGRATION TRIED: False" in text
    events = [json.loads(line) for line in open(tmp_path / "report" / "events.jsonl")]
    assert [(e["phase"], e["state"]) for e in events if e.get("type") == "phase"] == [("canary", "failed")]


def test_a_named_canary_that_cannot_move_fails_closed_naming_every_guest_passed_over(tmp_path):
    peers = {
        "kvm-b": [{"name": "paused-guest", "extra": "<test:runstate>3</test:runstate>"},
                  {"name": "local-guest", "disk": "/var/lib/libvirt/images/local-guest.img"},
                  {"name": "license-server"}],
        "kvm-c": [{"name": "pinned-db"}],
    }
    rc, output = _canary_play(tmp_path, peers, extra_vars={
        "rolling_maintenance_canary_guest": "pinned-db",
        "rolling_maintenance_stop_allowed_guests": ["license-server"], "rolling_maintenance_unmovable_guests": ["pinned-db"]})
    assert rc != 0, output[-4000:]
    text = " ".join(output.split())
    assert "No canary for kvm-a" in text, output[-4000:]
    for expected in ("paused-guest (paused", "local-guest (local disks", "license-server (in rolling_maintenance_stop_allowed_guests",
                     "pinned-db (in rolling_maintenance_unmovable_guests", "rolling_maintenance_canary: false"):
        assert expected in text, (expected, output[-4000:])
    assert "MIGRATION TRIED: False" in text


def test_canary_named_guest_that_runs_nowhere_fails_closed(tmp_path):
    rc, output = _canary_play(tmp_path, {"kvm-b": [{"name": "web-1"}]}, extra_vars={"rolling_maintenance_canary_guest": "web-01"})
    text = " ".join(output.split())
    assert rc != 0 and "No canary for kvm-a" in text, output[-4000:]
    assert "rolling_maintenance_canary_guest is web-01, and it runs on none of the hosts in service" in text
    assert "web-1 (not web-01)" in text


def _module_args(output, task_name):
    """The arguments a task's module got (printed with -vvv)."""
    task = output.split(task_name, 1)[1].split("TASK [", 1)[0]
    lines = task.split("        module_args:\n", 1)[1].splitlines()
    return yaml.safe_load("\n".join(line[12:] for line in itertools.takewhile(lambda line: line.startswith(" " * 12), lines)))


def test_the_default_canary_is_owned_and_migrates_with_the_runs_migration_options(tmp_path):
    """No canary named: no customer guest is asked to move; the collection's own canary starts on
    a peer and migrates with the run's migration options (the test driver then refuses the
    migration itself, as it cannot migrate)."""
    peers = {"kvm-b": [{"name": "small", "kib": 32768}], "kvm-c": [{"name": "big", "kib": 262144}]}
    options = {"max_downtime_ms": 250, "bandwidth_mib": 100, "auto_converge": True, "parallel_connections": 2,
               "timeout": 120, "stall_iterations": 7, "postcopy": False}
    rc, output = _canary_play(tmp_path, peers, options=options)
    text = " ".join(output.split())
    assert rc != 0, output[-4000:]
    assert "Canary virtfleet-canary-kvm-a failed on kvm-a" in text and "MIGRATION TRIED: True" in text, output[-4000:]
    asked = _module_args(output, "Canary - migrate onto the host and back")
    assert asked["guest"] == "" and asked["host"] == "kvm-a", asked
    assert sorted(peer["name"] for peer in asked["peers"]) == ["kvm-b", "kvm-c"]
    assert {k: asked[k] for k in options} == options, asked
    events = [json.loads(line) for line in open(tmp_path / "report" / "events.jsonl")]
    moved = [e for e in events if e.get("type") == "migration"]
    assert [(e["guest"], e["purpose"], e["status"]) for e in moved] == [("virtfleet-canary-kvm-a", "canary", "failed")]
    assert all(e["cluster"] == "fake" and e["host"] == "kvm-a" and e["run_id"] == "test-run" for e in events), events


def test_check_updates_asks_dnf_on_metadata_younger_than_the_validity(tmp_path):
    """RedHat family: the check asks `dnf check-update` with metadata_expire set to the validity, so
    dnf refreshes older repository metadata before answering. A fake dnf records how it was asked
    (no dnf here): this shows the role's side only; dnf's expiry is dnf's documented behaviour."""
    bin_dir, library = tmp_path / "bin", tmp_path / "library"
    bin_dir.mkdir()
    library.mkdir()
    calls = tmp_path / "dnf-calls"
    fake_dnf = bin_dir / "dnf"
    fake_dnf.write_text(textwrap.dedent("""\
        #!/bin/sh
        echo "$*" >> %s
        case "$*" in
          *check-update*) echo "kernel.x86_64  5.14.0-999.el9  baseos"; exit 100 ;;
          *needs-restarting*) exit 1 ;;
        esac
        """) % calls)
    fake_dnf.chmod(0o755)
    (library / "redhat_family.py").write_text(textwrap.dedent('''\
        from ansible.module_utils.basic import AnsibleModule
        AnsibleModule(argument_spec={}).exit_json(ansible_facts={"os_family": "RedHat"})
        '''))
    play = {"name": "check", "hosts": "kvm-a", "gather_facts": False,
            "vars": {"ansible_become": False, "rolling_maintenance_package_cache_valid_time": 1800},
            "tasks": [{"name": "Look like a RedHat host", "redhat_family": {}},
                      {"name": "The role's default check", "ansible.builtin.include_role": {
                          "name": "virtfleet.cluster.rolling_maintenance", "tasks_from": "check_updates"}},
                      {"name": "Show the verdict", "ansible.builtin.debug": {
                          "msg": "NEEDS PATCH: {{ rolling_maintenance_needs_patch }} REBOOT: {{ rolling_maintenance_reboot_required }}"}}]}
    playbook = tmp_path / "check.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    env = _env(ANSIBLE_LIBRARY=str(library), PATH=str(bin_dir) + os.pathsep + _env()["PATH"])
    result = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", str(_inventory(tmp_path)), str(playbook)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "NEEDS PATCH: True REBOOT: True" in output, output[-4000:]
    asked = calls.read_text().splitlines()
    assert [line for line in asked if "check-update" in line] == ["-q check-update --setopt=metadata_expire=1800"], asked
