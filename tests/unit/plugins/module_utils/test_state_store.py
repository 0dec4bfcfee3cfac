"""state_store.py (issue 17): the exclusive creation the cluster lock rests on, one call at a
time. The 16-thread race of test_maintenance_state.py shows it under contention; these show each
answer on its own, including the NFS case of a retransmitted LINK the lab cannot produce."""
import json
import os

import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import state_store


def test_the_first_exclusive_creation_wins_and_the_second_changes_nothing(tmp_path):
    path = str(tmp_path / "lock.json")
    assert state_store.create_json_exclusive(path, {"holder": "run-1"}) is True
    assert state_store.create_json_exclusive(path, {"holder": "run-2"}) is False
    assert json.loads(open(path).read()) == {"holder": "run-1"}
    assert sorted(os.listdir(str(tmp_path))) == ["lock.json"]  # no temporary file left behind


def test_a_link_onto_another_file_is_refused(tmp_path):
    source, target = tmp_path / "mine", tmp_path / "theirs"
    source.write_text("mine")
    target.write_text("theirs")
    assert state_store.link_exclusive(str(source), str(target)) is False
    assert target.read_text() == "theirs"


def test_a_retransmitted_link_that_already_made_our_link_is_ours(tmp_path):
    # NFS answers EEXIST to a LINK retransmitted after its reply was lost: the name is then our
    # own inode (link count 2).
    source, target = tmp_path / "mine", tmp_path / "lock"
    source.write_text("mine")
    os.link(str(source), str(target))
    assert state_store.link_exclusive(str(source), str(target)) is True


def test_an_existing_name_whose_source_vanished_is_not_ours(tmp_path, monkeypatch):
    target = tmp_path / "lock"
    target.write_text("theirs")
    source = tmp_path / "mine"
    source.write_text("mine")
    real_link = os.link

    def link_then_lose_the_source(source, name):
        try:
            real_link(source, name)
        finally:
            os.unlink(source)
    monkeypatch.setattr(state_store.os, "link", link_then_lose_the_source)
    assert state_store.link_exclusive(str(source), str(target)) is False


def test_other_link_errors_are_raised(tmp_path):
    with pytest.raises(FileNotFoundError):
        state_store.link_exclusive(str(tmp_path / "missing"), str(tmp_path / "lock"))


def test_an_atomic_write_replaces_the_content_and_leaves_no_temporary_file(tmp_path):
    path = str(tmp_path / "window.json")
    state_store.write_json_atomic(path, {"a": 1})
    state_store.write_json_atomic(path, {"b": 2})
    assert json.loads(open(path).read()) == {"b": 2}
    assert os.listdir(str(tmp_path)) == ["window.json"]
