"""Release plumbing: version, changelog fragments and a rehearsed release, the collection tarball.

Releasing (see docs/awx.md, "Releases"): bump ``version`` in galaxy.yml, run
``antsibull-changelog release`` (turns changelogs/fragments/*.yml into CHANGELOG.rst and
changelogs/changelog.yaml), ``ansible-galaxy collection build``. The rehearsal below runs the
same on a copy, so a broken fragment or plugin document fails here and not on release day.
"""
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
VENV_BIN = os.path.dirname(sys.executable)
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")


def run(*command, cwd=REPO, timeout=300):
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def galaxy():
    return yaml.safe_load(open(os.path.join(REPO, "galaxy.yml")))


def tracked_files():
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout.split("\0")
    return [path for path in listed if path and os.path.lexists(os.path.join(REPO, path))]


def test_version_is_semantic():
    assert SEMVER.match(str(galaxy()["version"])), galaxy()["version"]


def test_changelog_fragments_and_changelog_yaml_pass_antsibull_lint():
    for command in (["antsibull-changelog", "lint"],
                    ["antsibull-changelog", "lint-changelog-yaml", "changelogs/changelog.yaml"]):
        result = run(*command)
        # antsibull-changelog lint prints one line per problem and may still exit 0.
        assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.mark.slow
def test_release_rehearsal_puts_every_fragment_into_the_changelog(tmp_path):
    collection = tmp_path / "ansible_collections" / "virtfleet" / "cluster"
    for path in tracked_files():
        target = collection / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(REPO, path), target, follow_symlinks=False)
    # Entries of every section the changelog shows (the trivial section is never rendered).
    trivial = yaml.safe_load(open(collection / "changelogs" / "config.yaml")).get("trivial_section_name", "trivial")
    fragments = {}
    for name in os.listdir(collection / "changelogs" / "fragments"):
        for section, entries in yaml.safe_load(open(collection / "changelogs" / "fragments" / name)).items():
            if section == trivial:
                continue
            fragments.update({entry if isinstance(entry, str) else section: name
                              for entry in (entries if isinstance(entries, list) else [entries])})
    result = run("antsibull-changelog", "release", "--version", str(galaxy()["version"]), "--date", "2026-01-01",
                 cwd=collection)
    assert result.returncode == 0, result.stdout + result.stderr
    changelog = (collection / "CHANGELOG.rst").read_text()
    # Each entry's opening words (antsibull folds lines and escapes some characters).
    for entry, name in fragments.items():
        opening = " ".join(entry.split()[:4])
        assert opening in " ".join(changelog.split()), "%s: %r missing from CHANGELOG.rst" % (name, opening)
    # Every module is announced as new in the first release.
    for module in os.listdir(os.path.join(REPO, "plugins", "modules")):
        if module.endswith(".py") and module != "__init__.py":
            assert "virtfleet.cluster.%s - " % module[:-3] in changelog


@pytest.mark.slow
def test_collection_build_ships_the_collection_and_nothing_local(tmp_path):
    result = run("ansible-galaxy", "collection", "build", "--output-path", str(tmp_path), REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    info = galaxy()
    tarball = tmp_path / ("%s-%s-%s.tar.gz" % (info["namespace"], info["name"], info["version"]))
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    top = {name.split("/")[0] for name in names}
    assert {"MANIFEST.json", "FILES.json", "plugins", "roles", "playbooks", "meta",
            "execution-environment.yml", "bindep.txt", "requirements.txt"} <= top
    assert "plugins/modules/host_drain.py" in names and "meta/runtime.yml" in names
    # Work-tree state never ships (virtual env, collection link, caches, reports, build output).
    assert not top & {".venv", ".collections", ".hypothesis", ".pytest_cache", ".ansible", ".cache", ".lab",
                      "reports", "build", ".git"}, top
    assert not [n for n in names if n.startswith("tests/output") or n.endswith((".pyc", ".tar.gz"))]
