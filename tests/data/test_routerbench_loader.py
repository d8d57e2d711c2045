"""RouterBench loader: the real shared CSVs, the pickle path, and malformed files."""

from __future__ import annotations

import ast
import csv
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from uniroute.data import DataError
from uniroute.data.routerbench import load_routerbench, parse_prompt, responses_by_prompt

MODELS = ["m1", "m2"]


def write_wide_csv(path: Path, rows: list[dict[str, str]], models: list[str] = MODELS) -> Path:
    """A RouterBench-layout CSV; cells not given in a row are left empty."""
    header = ["", "sample_id", "prompt", "eval_name", *models]
    header += [f"{m}|model_response" for m in models] + [f"{m}|total_cost" for m in models]
    header.append("oracle_model_to_route_to")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for index, row in enumerate(rows):
            writer.writerow([str(100 + index)] + [row.get(column, "") for column in header[1:]])
    return path


def good_row(sample_id: str, prompt: str = "['Q?']", **cells: str) -> dict[str, str]:
    row = {
        "sample_id": sample_id,
        "prompt": prompt,
        "eval_name": "toy",
        "m1": "1.0",
        "m2": "0.0",
        "m1|total_cost": "0.5",
        "m2|total_cost": "0.25",
        "m1|model_response": "['A']",
        "m2|model_response": "['B']",
    }
    row.update(cells)
    return row


def read_raw_rows(folder: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of every CSV, in name order, read with the csv module alone."""
    rows, header = [], []
    for path in sorted(folder.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows.extend(reader)
    return header, rows


@pytest.fixture(scope="module")
def real(shared_data):
    folder = shared_data / "routerbench"
    header, rows = read_raw_rows(folder)
    dataset = load_routerbench(sorted(folder.glob("*.csv")))
    return header, rows, dataset


def test_real_files_have_every_row_and_the_eleven_models(real):
    header, rows, dataset = real
    expected_models = [c for c in header if f"{c}|total_cost" in header]
    assert len(expected_models) == 11
    assert dataset.models == expected_models
    assert dataset.n_prompts == len(rows)
    assert set(dataset.tasks) == {row["eval_name"] for row in rows}


def test_real_empty_score_cells_stay_missing(real):
    _, rows, dataset = real
    empty = np.array([[row[m] == "" for m in dataset.models] for row in rows])
    assert empty.sum() > 0
    assert np.array_equal(np.isnan(dataset.scores), empty)
    recorded = np.array(
        [[float(row[m]) if row[m] else 0.0 for m in dataset.models] for row in rows]
    )
    assert np.array_equal(dataset.scores[~empty], recorded[~empty])


def test_real_costs_are_the_call_costs_and_their_mean(real):
    _, rows, dataset = real
    for j, model in enumerate(dataset.models):
        cells = [row[f"{model}|total_cost"] for row in rows]
        given = [float(c) for c in cells if c != ""]
        assert dataset.model_costs[j] == pytest.approx(sum(given) / len(given), rel=1e-12)
        assert np.isnan(dataset.call_costs[:, j]).sum() == cells.count("")


def test_real_prompts_are_the_joined_list_parts(real):
    _, rows, dataset = real
    for i in (0, len(rows) // 2, len(rows) - 1):
        assert dataset.prompts[i] == "\n".join(ast.literal_eval(rows[i]["prompt"]))


def test_real_reused_sample_ids_become_unique(real):
    _, rows, dataset = real
    counts = Counter(row["sample_id"] for row in rows)
    reused = sum(n for n in counts.values() if n > 1)
    assert reused > 0
    assert len(set(dataset.prompt_ids)) == dataset.n_prompts
    assert sum("#" in p for p in dataset.prompt_ids) == reused
    assert sum("#" not in p for p in dataset.prompt_ids) == len(rows) - reused


def test_pickle_loads_identically_to_its_csv(shared_data, tmp_path):
    csv_path = shared_data / "routerbench" / "arc_challenge_test.csv"
    frame = pd.read_csv(csv_path, index_col=0, keep_default_na=False, na_values=[""])
    pickle_path = tmp_path / "routerbench_0shot.pkl"
    frame.to_pickle(pickle_path)
    from_csv, from_pickle = load_routerbench(csv_path), load_routerbench(pickle_path)
    assert from_pickle.models == from_csv.models
    assert list(from_pickle.prompt_ids) == list(from_csv.prompt_ids)
    assert list(from_pickle.prompts) == list(from_csv.prompts)
    assert list(from_pickle.tasks) == list(from_csv.tasks)
    assert np.array_equal(from_pickle.scores, from_csv.scores, equal_nan=True)
    assert np.isnan(from_pickle.scores).any()
    assert np.array_equal(from_pickle.call_costs, from_csv.call_costs, equal_nan=True)
    assert np.array_equal(from_pickle.model_costs, from_csv.model_costs)
    for model in from_csv.models:
        assert list(from_pickle.meta["responses"][model]) == list(from_csv.meta["responses"][model])


def test_parse_prompt_joins_list_parts_and_keeps_other_text():
    assert parse_prompt("['first', 'second']") == "first\nsecond"
    assert parse_prompt("['only']") == "only"
    assert parse_prompt("plain text [not a list]") == "plain text [not a list]"
    assert parse_prompt("[1, 2]") == "[1, 2]"
    assert parse_prompt("['unterminated]") == "['unterminated]"


def test_small_file_scores_costs_and_responses(tmp_path):
    path = write_wide_csv(
        tmp_path / "toy.csv",
        [
            good_row("s1", "['Q1', 'more']"),
            good_row("s2", m2="", **{"m2|model_response": "", "m1|total_cost": "1.5"}),
            good_row("s3", m1="0.5", **{"m1|total_cost": ""}),
        ],
    )
    dataset = load_routerbench(path)
    assert list(dataset.prompt_ids) == ["s1", "s2", "s3"]
    assert list(dataset.prompts) == ["Q1\nmore", "Q?", "Q?"]
    expected_scores = np.array([[1.0, 0.0], [1.0, np.nan], [0.5, 0.0]])
    assert np.array_equal(dataset.scores, expected_scores, equal_nan=True)
    assert dataset.model_costs.tolist() == [1.0, 0.25]  # (0.5 + 1.5) / 2 and 0.25
    assert np.isnan(dataset.call_costs[2, 0])
    responses = responses_by_prompt(dataset.subset([1, 2]))
    assert responses == {"m1": {"s2": "A", "s3": "A"}, "m2": {"s2": None, "s3": "B"}}


def test_cost_map_replaces_recorded_costs(tmp_path):
    path = write_wide_csv(tmp_path / "toy.csv", [good_row("s1")])
    dataset = load_routerbench(path, costs={"m1": 3.0, "m2": 1.0})
    assert dataset.model_costs.tolist() == [3.0, 1.0]
    assert dataset.call_costs is None


def test_model_without_any_cost_needs_a_cost_map(tmp_path):
    path = write_wide_csv(tmp_path / "toy.csv", [good_row("s1", **{"m2|total_cost": ""})])
    with pytest.raises(DataError, match=r"\['m2'\].*cost map"):
        load_routerbench(path)
    assert load_routerbench(path, costs={"m1": 1, "m2": 2}).model_costs.tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ({"m2": "abc"}, r"row 2 \(index 101\), column 'm2': 'abc' is not a number"),
        ({"m1": "1.5"}, r"row 2 \(index 101\), model 'm1': score 1.5 is outside \[0, 1\]"),
        ({"m2|total_cost": "-1"}, r"row 2 \(index 101\), column 'm2\|total_cost': -1.0 is not"),
        ({"sample_id": ""}, r"row 2 \(index 101\), column 'sample_id': empty cell"),
        ({"eval_name": ""}, r"row 2 \(index 101\), column 'eval_name': empty cell"),
    ],
)
def test_bad_cells_name_file_row_and_column(tmp_path, cells, expected):
    path = write_wide_csv(tmp_path / "bad.csv", [good_row("s1"), {**good_row("s2"), **cells}])
    with pytest.raises(DataError, match=expected) as error:
        load_routerbench(path)
    assert str(path) in str(error.value)


def test_missing_fixed_column_is_named(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"sample_id": ["s"], "prompt": ["p"], "m1": [1.0], "m1|total_cost": [0.1]}).to_csv(
        path, index=False
    )
    with pytest.raises(
        DataError, match=r"bad.csv: missing RouterBench column\(s\) \['eval_name'\]"
    ):
        load_routerbench(path)


def test_cost_column_without_score_column_is_named(tmp_path):
    path = tmp_path / "bad.csv"
    frame = {"sample_id": ["s"], "prompt": ["p"], "eval_name": ["t"], "m1": [1.0]}
    frame.update({"m1|total_cost": [0.1], "m9|total_cost": [0.1]})
    pd.DataFrame(frame).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"cost column 'm9\|total_cost' has no score column 'm9'"):
        load_routerbench(path)


def test_same_sample_id_and_prompt_twice_is_a_duplicate(tmp_path):
    path = write_wide_csv(tmp_path / "dup.csv", [good_row("s1"), good_row("s2"), good_row("s1")])
    with pytest.raises(DataError, match=r"row 3 \(index 102\): duplicate row for sample_id 's1'"):
        load_routerbench(path)


def test_same_sample_id_with_other_prompt_gets_its_row_label(tmp_path):
    path = write_wide_csv(tmp_path / "reuse.csv", [good_row("s1"), good_row("s1", "['other']")])
    assert list(load_routerbench(path).prompt_ids) == ["s1#100", "s1#101"]


def test_pickle_of_something_else_is_rejected(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match=r"list.pkl: holds a list, expected a pandas DataFrame"):
        load_routerbench(path)
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"corrupt.pkl: not a readable pickled DataFrame"):
        load_routerbench(corrupt)
