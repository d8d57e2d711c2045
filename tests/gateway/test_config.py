"""Gateway config files: TOML and JSON, defaults, and clear errors."""

from __future__ import annotations

import pytest

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
