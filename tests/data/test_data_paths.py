"""Where data and caches are looked for."""

from __future__ import annotations

from pathlib import Path

from uniroute.data import paths

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_data_dir_comes_from_the_environment_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIROUTE_DATA", str(tmp_path / "mine"))
    assert paths.default_data_dir() == tmp_path / "mine"


def test_data_dir_defaults_to_shared_beside_the_checkout(monkeypatch):
    monkeypatch.delenv("UNIROUTE_DATA", raising=False)
    assert paths.default_data_dir() == REPO_ROOT.parent / "shared" / "data"


def test_blank_environment_value_counts_as_unset(monkeypatch):
    monkeypatch.setenv("UNIROUTE_DATA", "  ")
    assert paths.default_data_dir() == REPO_ROOT.parent / "shared" / "data"


def test_source_tree_root_is_the_repository():
    assert paths.source_tree_root() == REPO_ROOT


def test_cache_dir_comes_from_the_environment_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIROUTE_CACHE", str(tmp_path / "cache"))
    assert paths.default_cache_dir() == tmp_path / "cache"


def test_cache_dir_defaults_to_the_checkout_when_writable(monkeypatch):
    monkeypatch.delenv("UNIROUTE_CACHE", raising=False)
    monkeypatch.setattr(paths.os, "access", lambda path, mode: True)
    assert paths.default_cache_dir() == REPO_ROOT / ".cache"


def test_cache_dir_falls_back_to_home_when_checkout_is_read_only(monkeypatch, tmp_path):
    monkeypatch.delenv("UNIROUTE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(paths.os, "access", lambda path, mode: False)
    assert paths.default_cache_dir() == tmp_path / ".cache" / "uniroute"
