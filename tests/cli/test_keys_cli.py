"""`uniroute keys create | list | revoke | usage` on an SQLite file and a PostgreSQL database."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from uniroute.cli.main import main
from uniroute.registry import Registry


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty registry: a file, or a database of the session's PostgreSQL cluster."""
    if request.param == "sqlite":
        location = str(tmp_path / "registry.db")
    else:
        location = request.getfixturevalue("postgres_cluster").create_database()
    Registry(location).close()
    return location


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_create_list_usage_revoke(registry: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys, "keys", "create", "ci bot", "--team", "red", "--models", "a, b", "--rpm", "5",
        "--daily-budget", "2.5", "--monthly-budget", "40", "--registry", registry,
    )  # fmt: skip
    assert code == 0, err
    secret = out.split("secret (shown only now): ")[1].strip()
    key_id = out.split()[2]
    assert secret.startswith("ur-") and key_id.startswith("key-")
    assert "a, b" in out and "5 rpm, 2.5/day, 40/month" in out
    with Registry(registry) as opened:
        key = opened.keys.lookup(secret)
        assert key is not None and key.id == key_id and key.allowed_models == ("a", "b")
        opened.keys.charge(key_id, 0.125)

    code, out, _ = _run(capsys, "keys", "list", "--registry", registry)
    assert code == 0 and key_id in out and "active" in out and "models=a,b" in out
    assert secret not in out and hashlib.sha256(secret.encode()).hexdigest() not in out
    code, out, _ = _run(capsys, "keys", "list", "--json", "--registry", registry)
    assert json.loads(out)["keys"][0]["team"] == "red" and secret not in out

    code, out, _ = _run(capsys, "keys", "usage", key_id, "--registry", registry)
    assert code == 0 and "spend 0.125  requests 1" in out and "day:" in out and "month:" in out
    code, out, _ = _run(capsys, "keys", "usage", "--json", "--registry", registry)
    assert [row["spend"] for row in json.loads(out)["usage"][key_id]] == [0.125, 0.125]

    code, out, _ = _run(capsys, "keys", "revoke", key_id, "--registry", registry)
    assert code == 0 and f"revoked key {key_id}" in out
    code, out, _ = _run(capsys, "keys", "list", "--registry", registry)
    assert "revoked 20" in out


def test_json_create_prints_the_secret_once(registry: str, capsys) -> None:
    code, out, _ = _run(capsys, "keys", "create", "k", "--json", "--registry", registry)
    created = json.loads(out)
    assert code == 0 and created["secret"].startswith("ur-")
    assert created["key"]["allowed_models"] is None and created["key"]["rpm_limit"] is None


@pytest.mark.parametrize(
    ("args", "message", "exit_code"),
    [
        (["create", "k", "--rpm", "0"], "--rpm: must be an integer >= 1", 2),
        (["create", "k", "--daily-budget", "-1"], "--daily-budget: must be a finite number > 0", 2),
        (["create", "k", "--monthly-budget", "nan"], "--monthly-budget", 2),
        (["create", "k", "--models", ","], "--models: give at least one model name", 2),
        (["create", "k", "--team", "a b"], "team must be", 2),
        (["create", ""], "key name must be non-empty", 2),
        (["revoke", "key-nope"], "no client key 'key-nope'", 2),
        (["usage", "key-nope"], "no client key 'key-nope'", 2),
    ],
)
def test_bad_input_is_one_line_naming_the_problem(
    registry: str, capsys, args: list[str], message: str, exit_code: int
) -> None:
    code = None
    try:
        code = main(["keys", *args, "--registry", registry])
    except SystemExit as exc:  # argparse's refusals
        code = exc.code
    err = capsys.readouterr().err
    assert code == exit_code and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    with Registry(registry) as opened:
        assert opened.keys.list() == []


def test_a_missing_registry_is_refused(tmp_path: Path, capsys) -> None:
    code = main(["keys", "list", "--registry", str(tmp_path / "nope.db")])
    assert code == 2 and "no such registry" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()
