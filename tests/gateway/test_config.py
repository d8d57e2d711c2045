"""Gateway config files: TOML and JSON, defaults, and clear errors."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from uniroute.errors import ConfigError
from uniroute.gateway.config import GatewayConfig, config_from_mapping, load_config


def test_defaults_without_a_file() -> None:
    assert load_config(None) == GatewayConfig()


def test_toml_with_a_gateway_table(tmp_path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        "[gateway]\nupstream_timeout_s = 2\nmax_body_bytes = 2048\n"
        'admin_token_env = "MY_ADMIN_TOKEN"\n'
    )
    config = load_config(path)
    assert config.upstream_timeout_s == 2.0 and isinstance(config.upstream_timeout_s, float)
    assert config.max_body_bytes == 2048
    assert config.admin_token_env == "MY_ADMIN_TOKEN"
    assert config.connect_retries == GatewayConfig().connect_retries


def test_json_at_top_level(tmp_path) -> None:
    path = tmp_path / "gateway.json"
    path.write_text('{"breaker_failure_threshold": 5, "breaker_cooldown_s": 1.5}')
    config = load_config(path)
    assert (config.breaker_failure_threshold, config.breaker_cooldown_s) == (5, 1.5)


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("upstream_timeout = 3\n", ".toml", "unknown setting"),
        ("max_body_bytes = 'big'\n", ".toml", "max_body_bytes must be a int"),
        ("max_body_bytes = 0\n", ".toml", "max_body_bytes must be >= 1"),
        ("upstream_timeout_s = -1\n", ".toml", "upstream_timeout_s must be > 0"),
        ("admin_token_env = 'not a name'\n", ".toml", "admin_token_env must name"),
        ("{not json", ".json", "not valid JSON"),
        ("[1, 2]", ".json", "expected a table"),
        ("a: 1", ".yaml", "must be a .toml or .json"),
    ],
)
def test_bad_files_name_the_file_and_field(tmp_path, text, suffix, message) -> None:
    path = tmp_path / f"gateway{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_secrets_come_from_the_environment(monkeypatch) -> None:
    config = config_from_mapping({"client_keys_env": "GW_KEYS", "admin_token_env": "GW_ADMIN"})
    monkeypatch.delenv("GW_KEYS", raising=False)
    monkeypatch.delenv("GW_ADMIN", raising=False)
    assert config.client_keys() == frozenset() and config.admin_token() is None
    monkeypatch.setenv("GW_KEYS", " k1, k2 ,,")
    monkeypatch.setenv("GW_ADMIN", "s3cr3t-admin")
    assert config.client_keys() == {"k1", "k2"} and config.admin_token() == "s3cr3t-admin"
    assert "s3cr3t-admin" not in str(config.to_dict())


# ------------------------------------------------------------------- unreadable and non-finite
DEEP_JSON = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        (b'{"upstream_timeout_s": Infinity}', ".json", "holds Infinity, which is not JSON"),
        (b'{"upstream_timeout_s": -Infinity}', ".json", "holds -Infinity, which is not JSON"),
        (b'{"breaker_cooldown_s": NaN}', ".json", "holds NaN, which is not JSON"),
        (b'{"upstream_timeout_s": 1e999}', ".json", "too big for a 64-bit float"),
        (b'{"max_body_bytes": 1' + b"0" * 5000 + b"}", ".json", "a number of 5001 characters"),
        (b'{"log_level": "\xff"}', ".json", "not UTF-8 text"),
        (b'log_level = "\xff"\n', ".toml", r"not valid TOML \(not UTF-8 text"),
        (DEEP_JSON, ".json", "nested deeper than 64 levels"),
        (b"upstream_allowlist = " + DEEP_JSON + b"\n", ".toml", "nested too deeply"),
        (b"upstream_timeout_s = inf\n", ".toml", "upstream_timeout_s is not a finite number"),
        (b"breaker_cooldown_s = nan\n", ".toml", "breaker_cooldown_s is not a finite number"),
        (b"[gateway]\nretry_backoff_s = -inf\n", ".toml", "gateway.retry_backoff_s is not a fin"),
        (b"upstream_allowlist = ['a', [1, nan]]\n", ".toml", r"upstream_allowlist\[1\]\[1\]"),
        (b"upstream_timeout_s = 1" + b"0" * 400 + b"\n", ".toml", "must be a finite number"),
        (b"max_body_bytes = 1" + b"0" * 30 + b"\n", ".toml", "must fit a 64-bit integer"),
    ],
)
def test_unreadable_or_non_finite_files_name_the_file(tmp_path, content, suffix, message) -> None:
    path = tmp_path / f"gateway{suffix}"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_a_directory_is_not_a_config_file(tmp_path) -> None:
    folder = tmp_path / "gateway.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(folder)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"upstream_timeout_s": float("inf")}, "upstream_timeout_s must be a finite number"),
        ({"breaker_cooldown_s": float("nan")}, "breaker_cooldown_s must be a finite number"),
        ({"connect_timeout_s": 10**400}, "connect_timeout_s must be a finite number"),
        ({1: 2, "also_unknown": 3}, r"unknown setting\(s\) \[1, 'also_unknown'\]"),
        # A wrongly typed value is shown cut to one short line, not pasted whole.
        ({"max_body_bytes": "x" * 10_000}, r"max_body_bytes must be a int, got 'x{76}\.\.\.$"),
    ],
)
def test_mappings_with_non_finite_or_odd_values_are_config_errors(values, message) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_mapping(values)


# ------------------------------------------------------------------- property: never a crash
SETTING_NAMES = [field.name for field in fields(GatewayConfig)]
# Numbers at the edges the loader must refuse cleanly: beyond a float, beyond 64 bits.
_edge_numbers = st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1, 1e308])
_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | _edge_numbers | st.text(max_size=12)
)
_json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Known names only, so that the values get past the check of the names.
_known_settings = st.dictionaries(st.sampled_from(SETTING_NAMES), _json_values, max_size=4)
_settings = _known_settings | st.dictionaries(
    st.sampled_from(SETTING_NAMES) | st.text(max_size=12), _json_values, max_size=6
)
_documents = _json_values | _settings | st.fixed_dictionaries({"gateway": _settings})

# TOML has no null: the same shapes without None.
_toml_scalars = st.booleans() | st.integers() | st.floats() | _edge_numbers | st.text(max_size=12)
_toml_values = st.recursive(
    _toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_toml_settings = st.dictionaries(
    st.sampled_from(SETTING_NAMES), _toml_values, max_size=4
) | st.dictionaries(st.sampled_from(SETTING_NAMES) | st.text(max_size=12), _toml_values, max_size=6)


def _toml(value: object) -> str:
    """A TOML value for a Python one (floats inf and nan included, as TOML spells them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    assert isinstance(value, dict)
    pairs = ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml(v)}" for k, v in value.items())
    return "{" + pairs + "}"


def _toml_document(settings_: dict, table: bool) -> str:
    lines = [f"{json.dumps(k, ensure_ascii=False)} = {_toml(v)}" for k, v in settings_.items()]
    return ("[gateway]\n" if table else "") + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("config-properties")


def _config_or_config_error(path: Path) -> None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
        assert "\n" not in str(exc)
    else:
        assert isinstance(config, GatewayConfig)


@settings(max_examples=200, deadline=None)
@given(document=_documents)
@example(document={"upstream_timeout_s": 10**400})  # beyond a float: once an OverflowError
def test_any_json_document_gives_a_config_or_a_config_error(scratch, document) -> None:
    path = scratch / "gateway.json"
    path.write_text(json.dumps(document))  # NaN and Infinity written as such
    _config_or_config_error(path)


@settings(max_examples=200, deadline=None)
@given(values=_toml_settings, table=st.booleans())
@example(values={"connect_timeout_s": 10**400}, table=True)
@example(values={"upstream_allowlist": [{"a\nb": math.inf}]}, table=False)  # a key's line break
def test_any_toml_document_gives_a_config_or_a_config_error(scratch, values, table) -> None:
    path = scratch / "gateway.toml"
    path.write_text(_toml_document(values, table), encoding="utf-8")
    _config_or_config_error(path)


@settings(max_examples=200, deadline=None)
@given(content=st.binary(max_size=200), suffix=st.sampled_from([".json", ".toml"]))
def test_any_bytes_give_a_config_or_a_config_error(scratch, content, suffix) -> None:
    path = scratch / f"gateway{suffix}"
    path.write_bytes(content)
    _config_or_config_error(path)
