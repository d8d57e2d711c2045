"""RouterDC-style JSON loader: the real routerdc7 and mmlupro27 files and malformed records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from uniroute.data import DataError, load_dataset
from uniroute.data.routerdc import load_routerdc, task_from_stem


def raw_records(folder: Path) -> list[tuple[str, int, dict]]:
    """(file stem, index, record) for every record of every JSON file, in name order."""
    out = []
    for path in sorted(folder.glob("*.json")):
        out += [(path.stem, i, r) for i, r in enumerate(json.loads(path.read_text()))]
    return out


@pytest.fixture(scope="module")
def real(shared_data):
    """Raw records and the loaded dataset of each real folder, read once."""
    return {
        folder: (raw_records(shared_data / folder), load_dataset(shared_data / folder, "routerdc"))
        for folder in ("routerdc7", "mmlupro27")
    }


@pytest.mark.parametrize(("folder", "n_models"), [("routerdc7", 7), ("mmlupro27", 27)])
def test_real_folder_shape_models_and_missing_cells(real, folder, n_models):
    records, dataset = real[folder]
    models = {m for _, _, r in records for m in r["scores"]}
    assert dataset.n_models == n_models == len(models)
    assert set(dataset.models) == models
    assert dataset.n_prompts == len(records)
    absent = sum(n_models - len(r["scores"]) for _, _, r in records)
    assert np.isnan(dataset.scores).sum() == absent
    assert dataset.model_costs.tolist() == [1.0] * n_models


def test_real_mmlupro27_cells_match_the_json(real):
    records, dataset = real["mmlupro27"]
    assert np.isnan(dataset.scores).sum() > 0
    row_of = {p: i for i, p in enumerate(dataset.prompt_ids)}
    incomplete = [item for item in records if len(item[2]["scores"]) < dataset.n_models]
    for stem, index, record in records[::97] + incomplete:
        i = row_of[f"{stem}/{index}"]
        assert dataset.prompts[i] == record["question"]
        assert dataset.tasks[i] == stem
        for j, model in enumerate(dataset.models):
            expected = record["scores"].get(model, np.nan)
            assert np.array_equal(dataset.scores[i, j], expected, equal_nan=True)


def test_real_routerdc7_tasks_drop_split_markers(real):
    _, dataset = real["routerdc7"]
    assert set(dataset.tasks) == {
        "MATH_prealgebra",
        "arc_challenge",
        "arc_easy",
        "gsm8k",
        "humaneval",
        "mbpp",
        "mmlu",
    }


@pytest.mark.parametrize(
    ("stem", "task"),
    [
        ("gsm8k-train", "gsm8k"),
        ("mmlu_test", "mmlu"),
        ("law", "law"),
        ("arc_easy_val", "arc_easy"),
        ("MATH_prealgebra", "MATH_prealgebra"),
        ("test", "test"),
    ],
)
def test_task_from_stem(stem, task):
    assert task_from_stem(stem) == task


def write_json(path: Path, records: object) -> Path:
    path.write_text(json.dumps(records))
    return path


def test_small_file_ids_scores_and_costs(tmp_path):
    path = write_json(
        tmp_path / "toy-test.json",
        [
            {"question": "q0", "scores": {"a": 1, "b": 0.25}, "cluster_id": 3},
            {"question": "q1", "scores": {"b": 0.0}},
            {"question": "q2", "scores": {"a": None, "c": 1.0}},
        ],
    )
    dataset = load_routerdc(path)
    assert list(dataset.prompt_ids) == ["toy-test/0", "toy-test/1", "toy-test/2"]
    assert list(dataset.tasks) == ["toy"] * 3
    assert dataset.models == ["a", "b", "c"]
    expected = np.array([[1.0, 0.25, np.nan], [np.nan, 0.0, np.nan], [np.nan, np.nan, 1.0]])
    assert np.array_equal(dataset.scores, expected, equal_nan=True)
    assert dataset.model_costs.tolist() == [1.0, 1.0, 1.0]
    priced = load_routerdc(path, costs={"a": 2.0, "b": 0.5, "c": 4.0, "unused": 9.0})
    assert priced.model_costs.tolist() == [2.0, 0.5, 4.0]
    with pytest.raises(DataError, match=r"no cost for models \['c'\]"):
        load_routerdc(path, costs={"a": 2.0, "b": 0.5})


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (["q", {}], r"record 2 \(list index 1\): expected an object, got list"),
        ({"scores": {"a": 1}}, r"record 2 \(list index 1\): 'question' is missing"),
        ({"question": 5, "scores": {}}, r"record 2 \(list index 1\): 'question' is of type int"),
        ({"question": "q"}, r"record 2 \(list index 1\): 'scores' is missing"),
        ({"question": "q", "scores": [1]}, r"record 2 \(list index 1\): 'scores' is of type list"),
        (
            {"question": "q", "scores": {"a": "1"}},
            r"record 2 \(list index 1\), model 'a': score '1' is not a number",
        ),
        (
            {"question": "q", "scores": {"a": True}},
            r"record 2 \(list index 1\), model 'a': score True is not a number",
        ),
        (
            {"question": "q", "scores": {"b": 1.5}},
            r"record 2 \(list index 1\), model 'b': score 1.5 is outside \[0, 1\]",
        ),
    ],
)
def test_bad_record_names_file_record_and_model(tmp_path, record, expected):
    path = write_json(tmp_path / "bad.json", [{"question": "ok", "scores": {"a": 1}}, record])
    with pytest.raises(DataError, match=expected) as error:
        load_routerdc(path)
    assert str(path) in str(error.value)


def test_not_a_list_and_broken_json_are_named(tmp_path):
    with pytest.raises(DataError, match=r"obj.json: expected a JSON list of records, got dict"):
        load_routerdc(write_json(tmp_path / "obj.json", {"question": "q"}))
    broken = tmp_path / "broken.json"
    broken.write_text('[{"question": "q",\n "scores": }]')
    with pytest.raises(DataError, match=r"broken.json: not valid JSON \(line 2"):
        load_routerdc(broken)
