"""`uniroute serve` refuses bad settings and missing state with one clear line."""

from __future__ import annotations

import pytest

from uniroute.cli.main import main


def test_bad_config_file_is_a_clear_error(tmp_path, capsys) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("upstream_timeout_s = 0\n")
    code = main(["serve", "--artifact", str(tmp_path), "--registry", str(tmp_path / "r.db"),
                 "--config", str(config)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("uniroute: error:") and "upstream_timeout_s must be > 0" in err


def test_missing_artifact_is_a_clear_error(tmp_path, capsys) -> None:
    registry = tmp_path / "pool.db"
    registry.write_bytes(b"")
    code = main(["serve", "--artifact", str(tmp_path / "absent"), "--registry", str(registry)])
    assert code == 2
    err = capsys.readouterr().err
    assert "uniroute: error:" in err and "absent" in err and "Traceback" not in err


def test_serve_is_listed_in_the_help(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--artifact" in out and "--config" in out and "--port" in out
