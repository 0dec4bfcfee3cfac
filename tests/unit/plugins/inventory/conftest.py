# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures shared by the inventory plugin's tests."""
import pytest


@pytest.fixture
def json_cache(tmp_path, monkeypatch):
    """Inventory caching enabled the way ansible.cfg/environment would, in a jsonfile cache."""
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("ANSIBLE_INVENTORY_CACHE", "true")
    monkeypatch.setenv("ANSIBLE_INVENTORY_CACHE_PLUGIN", "jsonfile")
    monkeypatch.setenv("ANSIBLE_INVENTORY_CACHE_CONNECTION", str(cache_dir))
    return cache_dir
