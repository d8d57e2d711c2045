"""`registry backup` (SQLite online backup, under a concurrent writer) and `registry copy`
(SQLite ↔ PostgreSQL, verified row by row; --replace; all or nothing), library and CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.registry.postgres import RegistryBackend
from uniroute.cli.main import main
from uniroute.errors import RegistryError, StateError, UsageError
from uniroute.registry import ModelAnswer, ModelCost, ModelRecord, NewModel, Registry
from uniroute.registry.calibration import Policy, Target
from uniroute.registry.transfer import TABLES, backup_registry, copy_registry
from uniroute.testing.postgres import PostgresCluster

PROMPTS = [f"p{i}" for i in range(6)]
PASSWORD = "s3cr3t-pw"


def _fill(location: str | Path) -> None:
    """A pool with every kind of row: records, scores, Ψ, answers, a binding and a policy."""
    with Registry(location) as registry:
        registry.bind("art-1", PROMPTS)
        # Names whose order differs between code-point and locale collation ("B" < "a").
        models = [
            NewModel(
                ModelRecord(
                    name="B-large",
                    cost=ModelCost(per_1k_input=0.0031, per_1k_output=1 / 3),
                    endpoint="http://127.0.0.1:9/v1/",
                    upstream_model="vendor/large",
                    api_key_env="LARGE_KEY",
                    tags=("prod", "büyük"),
                ),
                {p: (i + 1) / 7 for i, p in enumerate(PROMPTS)},
                {"art-1": np.array([0.1 + 0.2, -1e-300, 5e-324]), "art-0": np.array([2.0])},
                {
                    "p0": ModelAnswer("B", "The answer is (B) — surely", 26),
                    "p3": ModelAnswer(None, "?", 1),
                },
            ),
            NewModel(
                ModelRecord(name="a-small", cost=ModelCost(per_query=1e-7), enabled=False),
                {"p1": 0.0, "p2": 1.0, "p5": 0.1},
                {"art-1": np.array([np.pi, -0.0, 1e300])},
                {"p1": ModelAnswer("42")},
            ),
            NewModel(
                ModelRecord(name="mid", cost=ModelCost(per_query=0.002)),
                {p: 0.5 for p in PROMPTS[:4]},
                {"art-1": np.array([0.0, 0.5, 0.25])},
            ),
        ]
        registry.add_models(models)
        registry.set_policy(
            Policy(0.25, 0.0012, 0.81, Target("cost", 0.002), "fp", 0.0012, 6, "t", models=("mid",))
        )
        job = registry.jobs.create("onboard", "new", {"record": {"name": "new"}}, owner="a",
                                   lease_s=30.0)  # fmt: skip
        registry.jobs.renew(job.id, "a", lease_s=30.0, done=1, total=2, message="asking")
        registry.answer_cache.put("new", "http://x/v1", "p0", "Q?", "B", {"max_tokens": 8})
        key = registry.keys.create("ci", team="red", allowed_models=["mid"], rpm_limit=5).key
        registry.keys.charge(key.id, 0.125)  # a day row and a month row


def _pool_view(location: str | Path) -> dict:
    """Everything a gateway reads from a registry, through the Registry API."""
    with Registry(location) as registry:
        records = registry.list_models()
        names = [r.name for r in records]
        return {
            "binding": registry.binding(),
            "pool_version": registry.pool_version(),
            "records": records,
            "scores": registry.scores_matrix(names, PROMPTS).tobytes(),
            "answers": {n: registry.get_answers(n) for n in names},
            "features": {
                a: {n: v.tobytes() for n, v in registry.get_features(a).items()}
                for a in ("art-0", "art-1")
            },
            "policy": registry.get_policy(),
            "fingerprint": registry.pool_fingerprint("art-1"),
            "jobs": registry.jobs.list(),
            "cached": registry.answer_cache.get_many(
                "new", "http://x/v1", [("p0", "Q?")], {"max_tokens": 8}
            ),
            "keys": registry.keys.list(),
            "key_usage": registry.keys.usage(),
        }


# ---------------------------------------------------------------------------- copy
def test_every_registry_table_and_column_is_copied(backend: RegistryBackend) -> None:
    location = backend.new_location()
    Registry(location).close()
    assert backend.tables(location) - {"schema_version"} == {t.name for t in TABLES}
    models = next(t for t in TABLES if t.name == "models")
    assert set(backend.model_columns(location)) == set(models.columns)
    for table in TABLES:  # every column a table has is named, so none is silently left behind
        rows = backend.execute(location, f"SELECT * FROM {table.name} LIMIT 0")
        assert rows == []
        if backend.name == "sqlite":
            found = {r[1] for r in backend.execute(location, f"PRAGMA table_info({table.name})")}
        else:
            found = {
                r[0]
                for r in backend.execute(
                    location,
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                    (table.name,),
                )
            }
        assert found == set(table.columns), table.name


def test_copy_sqlite_to_postgres_and_back_is_identical(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    source = tmp_path / "pool.db"
    _fill(source)
    expected = _pool_view(source)
    url = postgres_cluster.create_database()

    report = copy_registry(source, url)
    assert dict(report.counts) == {
        "meta": 4, "models": 3, "scores": 13, "features": 4, "answers": 3, "policy": 1,
        "jobs": 1, "answer_cache": 1, "client_keys": 1, "key_usage": 2, "sessions": 0,
    }  # fmt: skip
    assert report.pool_version == expected["pool_version"] and not report.replaced
    assert (
        "copied 4 meta rows, 3 models, 13 scores, 4 Ψ rows, 3 answers, 1 policy rows, 1 jobs, "
        "1 cached answers, 1 client keys, 2 usage rows, 0 sessions"
    ) in report.describe()
    assert expected["cached"] == {"p0": "B"} and expected["jobs"][0].done == 1
    assert "verified row by row" in report.describe()
    assert _pool_view(url) == expected

    back = tmp_path / "back.db"
    copy_registry(url, back)
    assert _pool_view(back) == expected
    again = tmp_path / "again.db"
    copy_registry(back, again)  # SQLite → SQLite
    assert _pool_view(again) == expected
    # A new file appears only once complete: nothing is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.db", "back.db", "pool.db"]


def test_a_destination_with_a_pool_is_refused_unless_replace(
    tmp_path: Path, backend: RegistryBackend
) -> None:
    source = tmp_path / "source.db"
    _fill(source)
    destination = backend.new_location()
    with Registry(destination) as registry:
        registry.add_model(ModelRecord(name="other", cost=ModelCost(per_query=1.0)), {"q": 1.0})
        for _ in range(9):  # a revision past the source's, as a busy registry has
            registry.set_cost("other", ModelCost(per_query=2.0))
        before = registry.pool_version()
    assert before > _pool_view(source)["pool_version"]

    with pytest.raises(RegistryError, match="not empty .*1 models.*pass --replace"):
        copy_registry(source, destination)
    with Registry(destination) as registry:
        assert [r.name for r in registry.list_models()] == ["other"]
        assert registry.pool_version() == before

    report = copy_registry(source, destination, replace=True)
    assert report.replaced
    view, expected = _pool_view(destination), _pool_view(source)
    # A gateway on the destination compares pool_version: it must move, past the old one.
    assert view.pop("pool_version") == before + 1 == report.pool_version
    expected.pop("pool_version")
    assert view == expected
    assert "raised past the replaced registry's" in report.describe()


def test_a_copy_that_fails_midway_leaves_the_destination_as_it_was(
    tmp_path: Path, backend: RegistryBackend
) -> None:
    source = tmp_path / "source.db"
    _fill(source)
    destination = backend.new_location()
    Registry(destination).close()
    # The destination refuses answers rows: the copy fails after models and scores went in.
    if backend.name == "sqlite":
        backend.execute(
            destination,
            "CREATE TRIGGER no_answers BEFORE INSERT ON answers"
            " BEGIN SELECT RAISE(ABORT, 'answers refused'); END",
        )
    else:
        backend.execute(
            destination,
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'answers refused'; END $$",
        )
        backend.execute(
            destination,
            "CREATE TRIGGER no_answers BEFORE INSERT ON answers"
            " FOR EACH ROW EXECUTE FUNCTION refuse()",
        )
    with pytest.raises(StateError, match="answers refused") as failure:
        copy_registry(source, destination)
    assert "\n" not in str(failure.value)
    for table in TABLES:
        rows = backend.execute(destination, f"SELECT COUNT(*) FROM {table.name}")
        assert rows[0][0] == (2 if table.name == "meta" else 0), table.name
    with Registry(destination) as registry:
        assert registry.pool_version() == 0 and registry.binding() is None


def test_an_unreachable_destination_leaves_nothing_and_says_so_in_one_line(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    source = tmp_path / "source.db"
    _fill(source)
    url = f"postgresql://someone:{PASSWORD}@127.0.0.1:1/pool"
    with pytest.raises(StateError) as failure:
        copy_registry(source, url, timeout=2)
    message = str(failure.value)
    assert message.startswith("postgresql://someone@127.0.0.1:1/pool: cannot connect")
    assert PASSWORD not in message and "\n" not in message
    with pytest.raises(StateError, match="no such directory"):
        copy_registry(source, tmp_path / "missing" / "pool.db")
    assert not (tmp_path / "missing").exists()
    # Copying a database onto itself is refused before anything is written.
    url = postgres_cluster.create_database()
    copy_registry(source, url)
    with pytest.raises(StateError, match="is the source registry itself"):
        copy_registry(url, url, replace=True)
    with pytest.raises(StateError, match="is the source registry itself"):
        copy_registry(source, source, replace=True)


# ---------------------------------------------------------------------------- backup
_WRITER = textwrap.dedent(
    """
    import sys
    from uniroute.registry import ModelCost, ModelRecord, Registry
    prompts = [f"p{i}" for i in range(6)]
    with Registry(sys.argv[1]) as registry:
        for i in range(100000):
            name = f"w{i:05d}"
            registry.add_model(
                ModelRecord(name=name, cost=ModelCost(per_query=0.001)),
                {p: (i % 7) / 7 for p in prompts},
            )
            print(name, flush=True)  # committed
    """
)


def test_a_backup_under_a_writing_process_holds_every_model_committed_before_it(
    tmp_path: Path,
) -> None:
    source = tmp_path / "live.db"
    _fill(source)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(source)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None
        committed = [writer.stdout.readline().strip() for _ in range(30)]
        # What the writer has committed sits in its write-ahead log: a plain file copy lacks it.
        assert (tmp_path / "live.db-wal").stat().st_size > 0
        report = backup_registry(source, tmp_path / "backup.db")
        after = [writer.stdout.readline().strip() for _ in range(5)]
    finally:
        writer.kill()
        writer.wait()
    assert after[-1].startswith("w")  # the writer went on while the backup ran
    with Registry(tmp_path / "backup.db") as backup:
        names = {r.name for r in backup.list_models()}
        assert set(committed) <= names and {"B-large", "a-small", "mid"} <= names
        assert report.models == len(names)
        for name in names - {"B-large", "a-small", "mid"}:  # no half-added model
            assert len(backup.get_scores(name)) == len(PROMPTS)
    assert not (tmp_path / "backup.db-wal").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_backup_is_a_valid_registry_and_refuses_to_overwrite(tmp_path: Path) -> None:
    source, destination = tmp_path / "pool.db", tmp_path / "copy.db"
    _fill(source)
    report = backup_registry(source, destination)
    assert report.describe().startswith(f"backed up {source} to {destination}: 3 models")
    assert _pool_view(destination) == _pool_view(source)
    with pytest.raises(StateError, match="already exists; pass --force"):
        backup_registry(source, destination)
    with Registry(source) as registry:
        registry.remove_model("mid")
    backup_registry(source, destination, force=True)
    assert _pool_view(destination) == _pool_view(source)
    with pytest.raises(StateError, match="is the source registry itself"):
        backup_registry(source, source, force=True)
    (tmp_path / "text.db").write_text("not a database\n")
    with pytest.raises(StateError, match="not a readable registry database"):
        backup_registry(tmp_path / "text.db", tmp_path / "x.db")
    assert not (tmp_path / "x.db").exists()


def test_backing_up_a_postgres_registry_points_to_pg_dump(tmp_path: Path) -> None:
    url = f"postgresql://someone:{PASSWORD}@db.example:5432/pool"
    with pytest.raises(UsageError) as refusal:
        backup_registry(url, tmp_path / "pool.dump")
    message = str(refusal.value)
    assert PASSWORD not in message and "\n" not in message
    assert f"pg_dump --format=custom --file={tmp_path / 'pool.dump'}" in message
    assert "'postgresql://someone@db.example:5432/pool'" in message
    assert "uniroute registry copy" in message


# ---------------------------------------------------------------------------- CLI
def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_registry_command_reports_in_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    postgres_cluster: PostgresCluster,
) -> None:
    source = tmp_path / "pool.db"
    _fill(source)
    monkeypatch.setenv("UNIROUTE_REGISTRY", str(source))
    code, out, err = _run(capsys, "registry", "backup", str(tmp_path / "b.db"))
    assert (code, err) == (0, "") and out.startswith("backed up")
    code, out, err = _run(capsys, "registry", "backup", str(tmp_path / "b.db"))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert (
        err
        == f"uniroute: error: {tmp_path / 'b.db'}: already exists; pass --force to overwrite it\n"
    )
    code, _, err = _run(
        capsys, "registry", "backup", "b2.db", "--registry", str(tmp_path / "no.db")
    )
    assert code == 2 and err == f"uniroute: error: {tmp_path / 'no.db'}: no such registry\n"
    code, _, err = _run(
        capsys, "registry", "backup", str(tmp_path / "nodir" / "b.db"), "--registry", str(source)
    )
    assert code == 2 and err.count("\n") == 1 and "no such directory" in err
    url = postgres_cluster.url(
        postgres_cluster.create_database().rpartition("/")[2], password=PASSWORD
    )
    code, _, err = _run(capsys, "registry", "backup", "pool.dump", "--registry", url)
    assert code == 2 and err.count("\n") == 1 and "pg_dump" in err and PASSWORD not in err

    code, out, err = _run(capsys, "registry", "copy", str(source), url)
    assert (code, err) == (0, "") and "3 models" in out and "verified row by row" in out
    assert PASSWORD not in out
    code, out, err = _run(capsys, "registry", "copy", str(source), url)
    assert code == 2 and out == "" and err.count("\n") == 1 and "--replace" in err
    code, out, err = _run(capsys, "registry", "copy", str(source), url, "--replace")
    assert code == 0 and "replacing what was there" in out
    code, _, err = _run(capsys, "registry", "copy", str(tmp_path / "no.db"), url)
    assert code == 2 and err == f"uniroute: error: {tmp_path / 'no.db'}: no such registry\n"
