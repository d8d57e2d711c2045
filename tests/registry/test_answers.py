"""Models' answers to the representative prompts in the registry (both backends, see
conftest.py): storage, limits, migration, atomicity, and the optional answer column of scores
files."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.registry.postgres import RegistryBackend
from uniroute.errors import DataError, RegistryError, StateError
from uniroute.registry import (
    MAX_ANSWER_KEY_CHARS,
    MAX_RAW_ANSWER_CHARS,
    MIGRATIONS,
    REGISTRY_SCHEMA_VERSION,
    ModelAnswer,
    ModelCost,
    ModelRecord,
    NewModel,
    Registry,
    migrate,
    read_model_file,
    read_scores_file,
)

PROMPTS = [f"p{i}" for i in range(5)]


def _record(name: str, cost: float = 1.0) -> ModelRecord:
    return ModelRecord(name=name, cost=ModelCost(per_query=cost))


def _rows(registry: Registry, table: str) -> int:
    with registry._read() as connection:
        return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


# ----------------------------------------------------------------------------- round trip
def test_answers_are_stored_and_read_back_with_the_model(registry: Registry) -> None:
    long_answer = "The answer is B. " + "x" * (MAX_RAW_ANSWER_CHARS + 10)
    answers = {
        "p0": ModelAnswer.of("B", "The answer is B."),
        "p1": ModelAnswer.of(None, "I do not know."),  # answered, nothing comparable
        "p2": ModelAnswer("42"),  # a key without its raw text (recorded data keeps only keys)
        "p3": ModelAnswer.of("B", long_answer),
    }
    registry.add_model(_record("a"), {"p0": 1.0, "p1": 0.0}, {"art": np.array([0.5])}, answers)
    registry.add_model(_record("b"), {"p0": 0.0})  # a model without answers
    stored = registry.get_answers("a")
    assert stored["p0"] == ModelAnswer("B", "The answer is B.", 16)
    assert stored["p1"] == ModelAnswer(None, "I do not know.", 14)
    assert stored["p2"] == ModelAnswer("42", None, None)
    # Cut to the limit, with the full length kept for audits.
    assert stored["p3"].raw == long_answer[:MAX_RAW_ANSWER_CHARS]
    assert stored["p3"].raw_chars == len(long_answer) and stored["p3"].truncated
    assert not stored["p0"].truncated
    assert set(stored) == {"p0", "p1", "p2", "p3"}  # p4: not answered, no row
    assert registry.get_answers("b") == {}
    assert registry.answer_count("a") == (4, 3) and registry.answer_count("b") == (0, 0)

    keys, recorded = registry.answers_matrix(["b", "a"], PROMPTS)
    assert keys.dtype == object and keys.shape == (5, 2)
    assert keys[:, 0].tolist() == [None] * 5
    assert keys[:, 1].tolist() == ["B", None, "42", "B", None]
    assert recorded.tolist() == [0, 4]
    # Prompt ids the caller does not ask for are not counted.
    keys, recorded = registry.answers_matrix(["a"], ["p3", "zz"])
    assert keys[:, 0].tolist() == ["B", None] and recorded.tolist() == [1]
    assert registry.answers_matrix([], PROMPTS)[0].shape == (5, 0)


def test_answers_go_with_the_model_when_removed_or_replaced(registry: Registry) -> None:
    registry.add_model(_record("a"), {"p0": 1.0}, None, {"p0": ModelAnswer.of("A", "A")})
    registry.add_model(
        _record("a"), {"p1": 1.0}, None, {"p1": ModelAnswer.of("C", "C")}, replace=True
    )
    assert registry.get_answers("a") == {"p1": ModelAnswer("C", "C", 1)}
    registry.remove_model("a")
    assert _rows(registry, "answers") == 0


def test_the_answer_count_of_an_unknown_model_is_a_clear_error(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="no model 'ghost' in the registry"):
        registry.answer_count("ghost")
    with pytest.raises(RegistryError, match="no model 'ghost' in the registry"):
        registry.get_answers("ghost")


@pytest.mark.parametrize(
    "answer, message",
    [
        (ModelAnswer(None), "has neither a key nor a raw text"),
        (ModelAnswer(""), "the key must be a non-empty string"),
        (ModelAnswer("k" * (MAX_ANSWER_KEY_CHARS + 1)), f"over {MAX_ANSWER_KEY_CHARS}"),
        (ModelAnswer("A", "r" * (MAX_RAW_ANSWER_CHARS + 1)), "cut it with ModelAnswer.of"),
        (ModelAnswer("A", "abc", 2), "raw_chars 2 is below the text's length"),
        (ModelAnswer("A", None, 3), "raw_chars given without a raw text"),
        ("A", "is a str, not a ModelAnswer"),
    ],
)
def test_bad_answers_are_refused_before_anything_is_written(
    registry: Registry, answer: object, message: str
) -> None:
    version = registry.pool_version()
    with pytest.raises(RegistryError, match=f"model 'a': answer to prompt 'p0'.*{message}"):
        registry.add_model(_record("a"), {"p0": 1.0}, None, {"p0": answer})  # type: ignore[dict-item]
    assert registry.pool_version() == version and not registry.has_model("a")


# The disk "fails" in the middle of the second model's answers, inside the transaction.
FAILING_ANSWER_WRITE = {
    "sqlite": [
        "CREATE TRIGGER fail_answers BEFORE INSERT ON answers WHEN NEW.prompt_id = 'p3' "
        "BEGIN SELECT RAISE(ABORT, 'disk I/O error (simulated)'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION fail_answers() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.prompt_id = 'p3' THEN RAISE EXCEPTION 'disk I/O error (simulated)'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER fail_answers BEFORE INSERT ON answers FOR EACH ROW "
        "EXECUTE FUNCTION fail_answers()",
    ],
}


def test_a_failing_answer_write_leaves_no_half_added_model(
    backend: RegistryBackend, registry: Registry
) -> None:
    registry.add_model(_record("old"), {"p0": 1.0})
    version = registry.pool_version()
    for statement in FAILING_ANSWER_WRITE[backend.name]:
        backend.execute(registry.path, statement)
    models = [
        NewModel(_record("a"), {"p0": 1.0}, {"art": np.array([0.1])}, {"p0": ModelAnswer("A")}),
        NewModel(
            _record("b"),
            {"p0": 0.0},
            {"art": np.array([0.2])},
            {"p2": ModelAnswer("B"), "p3": ModelAnswer("C")},
        ),
    ]
    with pytest.raises(StateError, match="write failed.*disk I/O error") as raised:
        registry.add_models(models)
    assert "\n" not in str(raised.value)
    assert [r.name for r in registry.list_models()] == ["old"]
    assert registry.pool_version() == version
    assert _rows(registry, "answers") == 0 and _rows(registry, "features") == 0
    assert registry.score_counts() == {"old": 1}


# ------------------------------------------------------------------------------ migration
def _write_v2_registry(backend: RegistryBackend, path: str | Path) -> None:
    """A schema-version-2 registry as the version-2 code wrote it: models, scores, Psi."""
    if backend.name == "sqlite":  # the file as the version-2 code opened it
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
            connection.execute("PRAGMA journal_mode = WAL")
            assert migrate(connection, MIGRATIONS[:2]) == 2
    else:
        with Registry(path, migrations=MIGRATIONS[:2]) as v2:
            assert v2.schema_version == 2
    columns = (
        "name, cost_per_query, cost_per_1k_input, cost_per_1k_output, expected_output_tokens,"
        " endpoint, upstream_model, api_key_env, tags, enabled, revision, created_at, updated_at"
    )
    backend.executemany(
        path,
        f"INSERT INTO models ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("alpha", 0.002, None, None, 256.0, "http://127.0.0.1:9/v1", "org/alpha", None,
             '["open"]', 1, 1, "2025-01-01T00:00:00+00:00", "2025-01-02T00:00:00+00:00"),
            ("beta", 0.01, None, None, 256.0, None, None, None, "[]", 0, 2,
             "2025-01-03T00:00:00+00:00", "2025-01-04T00:00:00+00:00"),
        ],
    )  # fmt: skip
    backend.executemany(
        path,
        "INSERT INTO scores (model, prompt_id, score) VALUES (?, ?, ?)",
        [("alpha", "p0", 1.0), ("alpha", "p1", 0.0), ("beta", "p2", 0.5)],
    )
    backend.execute(
        path,
        "INSERT INTO features (model, artifact_id, psi) VALUES ('alpha', 'art', ?)",
        (np.array([0.25], dtype="<f8").tobytes(),),
    )
    backend.execute(path, "UPDATE meta SET value = '2' WHERE key = 'pool_version'")


def test_a_v2_file_is_migrated_and_its_models_have_no_answers(backend: RegistryBackend) -> None:
    path = backend.new_location()
    _write_v2_registry(backend, path)
    assert backend.schema_version(path) == 2 and "answers" not in backend.tables(path)
    with Registry(path) as registry:
        assert registry.schema_version == REGISTRY_SCHEMA_VERSION
        alpha, beta = registry.list_models()
        assert (alpha.name, alpha.upstream_model, alpha.tags, alpha.revision) == (
            "alpha", "org/alpha", ("open",), 1,
        )  # fmt: skip
        assert (beta.name, beta.enabled, beta.revision) == ("beta", False, 2)
        assert registry.get_scores("alpha") == {"p0": 1.0, "p1": 0.0}
        assert registry.get_features("art")["alpha"].tolist() == [0.25]
        assert registry.get_answers("alpha") == {} and registry.answer_count("beta") == (0, 0)
        keys, recorded = registry.answers_matrix(["alpha", "beta"], PROMPTS)
        assert recorded.tolist() == [0, 0] and set(keys.flat) == {None}
        # Migrating changes nothing routable: a running server has nothing to re-read.
        assert registry.pool_version() == 2
        registry.add_model(_record("gamma"), {"p0": 1.0}, None, {"p0": ModelAnswer.of("D", "D")})
        assert registry.answer_count("gamma") == (1, 1)
    assert backend.schema_version(path) == REGISTRY_SCHEMA_VERSION


def test_the_v3_migration_is_one_transaction(backend: RegistryBackend) -> None:
    path = backend.new_location()
    _write_v2_registry(backend, path)

    def v3_then_crash(connection: object) -> None:
        MIGRATIONS[2](connection)
        raise RuntimeError("killed after the v3 step")

    with pytest.raises(RuntimeError, match="killed after the v3 step"):
        Registry(path, migrations=(*MIGRATIONS[:2], v3_then_crash))
    assert backend.schema_version(path) == 2 and "answers" not in backend.tables(path)
    with Registry(path) as registry:
        assert registry.schema_version == REGISTRY_SCHEMA_VERSION
        assert [r.name for r in registry.list_models()] == ["alpha", "beta"]


# ------------------------------------------------------------------------------ score files
def test_scores_files_may_carry_each_prompts_answer(tmp_path: Path) -> None:
    csv_path = tmp_path / "s.csv"
    csv_path.write_text(
        'prompt_id,score,answer\np0,1,"The answer is B, because..."\np1,0,\np2,,C\n'
    )
    read = read_model_file(csv_path)
    assert read.scores == {"p0": 1.0, "p1": 0.0}
    # An empty cell is no answer; an answer without a score is kept.
    assert read.answers == {"p0": "The answer is B, because...", "p2": "C"}
    assert read_scores_file(csv_path) == read.scores
    tsv_path = tmp_path / "s.tsv"
    tsv_path.write_text("prompt_id\tscore\tanswer\np0\t1\tA, then B\n")
    assert read_model_file(tsv_path).answers == {"p0": "A, then B"}
    jsonl_path = tmp_path / "s.jsonl"
    rows = [
        {"prompt_id": "p0", "score": 1, "answer": "D"},
        {"prompt_id": "p1", "score": 0, "answer": 42},
        {"prompt_id": "p2", "score": 1, "answer": None},
        {"prompt_id": "p3", "score": 1},
    ]
    jsonl_path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    read = read_model_file(jsonl_path)
    assert read.answers == {"p0": "D", "p1": "42"}
    assert read.scores == {"p0": 1.0, "p1": 0.0, "p2": 1.0, "p3": 1.0}
    # Without an answer column nothing changes.
    plain = tmp_path / "plain.csv"
    plain.write_text("prompt_id,score\np0,1\n")
    assert read_model_file(plain).answers == {}


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("a.jsonl", '{"prompt_id": "p0", "score": 1, "answer": ["B"]}\n',
         "a.jsonl, line 1: answer must be text .*got list"),
        ("b.jsonl", '{"prompt_id": "p0", "score": 1}\n{"prompt_id": "p1", "score": 1, '
         '"answer": true}\n', "b.jsonl, line 2: answer must be text .*got bool"),
        ("c.csv", "prompt_id,score,answer\np0,1,A\np1,1\n",
         "c.csv, line 3: the row ends before its answer column"),
        ("d.csv", "prompt_id,score,answer\np0,1," + "x" * 100_001 + "\n",
         "d.csv, line 2: answer is 100001 characters, over 100000"),
        ("e.csv", "prompt_id,score,answer\np0,1,A\x00B\n", "e.csv, line 2: answer holds a NUL"),
        # A prompt given twice is an error even when one of its rows has no score.
        ("f.csv", "prompt_id,score,answer\np0,,A\np0,1,B\n",
         "f.csv, line 3: prompt_id 'p0' appears twice"),
    ],
)  # fmt: skip
def test_bad_answer_cells_name_the_file_line_and_field(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message) as raised:
        read_model_file(path)
    assert "\n" not in str(raised.value)
