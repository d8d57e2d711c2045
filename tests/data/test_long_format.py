"""Long format: reading CSV, JSONL and Parquet, round trips, and malformed logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from uniroute.data import DataError, RoutingDataset
from uniroute.data.long_format import load_long_format, write_long_format
from uniroute.data.routerbench import load_routerbench

ENCODINGS = ["csv", "jsonl", "parquet"]


def hand_made() -> RoutingDataset:
    """Three prompts, three models, a missing score, a missing reference, awkward text."""
    return RoutingDataset(
        prompt_ids=["p-1", "007", "p,3"],
        prompts=['Say "hi",\nthen stop.', "None", "2 + 2 = ?"],
        tasks=["chat", "default", "math"],
        models=["small", "medium", "large"],
        model_costs=[0.5, 2.0, 10.0],
        scores=[[0.0, 1.0, 1.0], [0.25, np.nan, 1.0], [1.0, 0.0, np.nan]],
        references=["hi", None, "4"],
        name="hand",
    )


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_round_trip_keeps_prompts_scores_costs_and_references(tmp_path, encoding):
    original = hand_made()
    path = tmp_path / f"logs.{encoding}"
    write_long_format(original, path)
    back = load_long_format(path)
    assert list(back.prompt_ids) == list(original.prompt_ids)
    assert list(back.prompts) == list(original.prompts)
    assert list(back.tasks) == list(original.tasks)
    assert list(back.references) == list(original.references)
    assert back.models == original.models
    assert np.array_equal(back.scores, original.scores, equal_nan=True)
    assert back.model_costs.tolist() == original.model_costs.tolist()
    assert np.array_equal(back.effective_call_costs(), original.effective_call_costs())


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_round_trip_of_real_routerbench_rows_keeps_call_costs(shared_data, tmp_path, encoding):
    original = load_routerbench(shared_data / "routerbench" / "arc_challenge_test.csv")
    path = tmp_path / f"rb.{encoding}"
    write_long_format(original, path)
    back = load_long_format(path)
    assert list(back.prompt_ids) == list(original.prompt_ids)
    assert back.models == original.models
    assert np.isnan(original.scores).any()
    assert np.array_equal(back.scores, original.scores, equal_nan=True)
    assert np.array_equal(back.call_costs, original.call_costs, equal_nan=True)
    assert np.allclose(back.model_costs, original.model_costs, rtol=1e-12, atol=0)


def test_csv_with_per_call_costs_and_defaults(tmp_path):
    path = tmp_path / "calls.csv"
    path.write_text(
        "prompt_id,prompt,model,score,cost\n"
        "a,first,m1,1,0.2\n"
        "a,first,m2,0,1.0\n"
        "b,second,m1,0.5,0.4\n"
        "b,second,m2,,3.0\n"
    )
    dataset = load_long_format(path)
    assert list(dataset.prompt_ids) == ["a", "b"]
    assert list(dataset.tasks) == ["default", "default"]
    assert dataset.references is None
    assert np.array_equal(dataset.scores, [[1.0, 0.0], [0.5, np.nan]], equal_nan=True)
    assert dataset.model_costs == pytest.approx([0.3, 2.0])  # (0.2 + 0.4) / 2, (1 + 3) / 2
    assert dataset.call_costs.tolist() == [[0.2, 1.0], [0.4, 3.0]]


def test_jsonl_numbers_become_ids_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "calls.ndjson"
    rows = [
        {"prompt_id": 1, "prompt": "x", "model": "m", "score": 1, "cost": 2, "task": "t"},
        {"prompt_id": 2, "prompt": "y", "model": "m", "score": 0.0, "cost": 4},
    ]
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    dataset = load_long_format(path)
    assert list(dataset.prompt_ids) == ["1", "2"]
    assert list(dataset.tasks) == ["t", "default"]
    assert dataset.model_costs.tolist() == [3.0]


def test_missing_costs_need_a_cost_map(tmp_path):
    path = tmp_path / "calls.csv"
    path.write_text("prompt_id,prompt,model,score,cost\na,q,m1,1,0.5\na,q,m2,1,\n")
    with pytest.raises(DataError, match=r"no 'cost' given for model\(s\) \['m2'\].*--costs"):
        load_long_format(path)
    dataset = load_long_format(path, costs={"m1": 1.0, "m2": 5.0})
    assert dataset.model_costs.tolist() == [1.0, 5.0]
    assert dataset.call_costs is None


def test_files_given_together_merge_by_prompt(tmp_path):
    (tmp_path / "a.csv").write_text("prompt_id,prompt,model,score,cost\nq1,Q,m1,1,1\n")
    (tmp_path / "b.csv").write_text("prompt_id,prompt,model,score,cost\nq1,Q,m2,0,2\n")
    dataset = load_long_format([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert dataset.n_prompts == 1
    assert dataset.scores.tolist() == [[1.0, 0.0]]


HEADER = "prompt_id,prompt,model,score\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("a,q,m,1\na,q,m2,high\n", r"row 2, column 'score': 'high' is not a number"),
        ("a,q,m,1\na,q,m2,1.5\n", r"row 2, column 'score': 1.5 is outside \[0, 1\]"),
        ("a,q,m,1\na,q,m2,-0.1\n", r"row 2, column 'score': -0.1 is outside \[0, 1\]"),
        (
            "a,q,m,1\na,other,m2,1\n",
            r"row 2: prompt_id 'a' has a different 'prompt' than at .*row 1",
        ),
        ("a,q,m,1\nb,r,m,0\na,q,m,0\n", r"row 3: duplicate row for prompt_id 'a', model 'm' "),
        ("a,q,m,1\na,q,,1\n", r"row 2: empty 'model'"),
        ("a,q,m,1\n,q,m,1\n", r"row 2: empty 'prompt_id'"),
    ],
)
def test_bad_csv_rows_name_file_row_and_column(tmp_path, body, expected):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER.replace("score", "score,cost") + body.replace("\n", ",1\n"))
    with pytest.raises(DataError, match=expected) as error:
        load_long_format(path)
    assert str(path) in str(error.value)


def test_duplicate_row_names_both_rows(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("prompt_id,prompt,model,score,cost\na,q,m,1,1\nb,r,m,0,1\na,q,m,0,1\n")
    with pytest.raises(DataError, match=r"dup.csv, row 3: .*first given at .*dup.csv, row 1\)"):
        load_long_format(path)


def test_missing_required_column_is_named(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("prompt_id,prompt,model,cost\na,q,m,1\n")
    with pytest.raises(DataError, match=r"bad.csv: missing required column\(s\) \['score'\]"):
        load_long_format(path)


def test_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"prompt_id": "a", "prompt": "q", "model": "m", "score": 1, "cost": 1})
    path.write_text(good + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: not valid JSON"):
        load_long_format(path)
    path.write_text(good + "\n" + json.dumps({**json.loads(good), "model": "n", "score": "x"}))
    with pytest.raises(DataError, match=r"bad.jsonl, line 2, column 'score': 'x' is not a number"):
        load_long_format(path)


def test_boolean_scores_are_rejected(tmp_path):
    path = tmp_path / "bool.parquet"
    frame = pd.DataFrame(
        {"prompt_id": ["a"], "prompt": ["q"], "model": ["m"], "score": [True], "cost": [1.0]}
    )
    frame.to_parquet(path)
    with pytest.raises(DataError, match=r"bool.parquet, row 1, column 'score': booleans"):
        load_long_format(path)


def test_parquet_row_numbers_in_errors(tmp_path):
    path = tmp_path / "bad.parquet"
    frame = pd.DataFrame(
        {"prompt_id": ["a", "b"], "prompt": ["q", "r"], "model": ["m", "m"], "score": [1.0, 3.0]}
    )
    frame.to_parquet(path)
    with pytest.raises(DataError, match=r"bad.parquet, row 2, column 'score': 3.0 is outside"):
        load_long_format(path, costs={"m": 1.0})


def test_unknown_extension_is_named(tmp_path):
    path = tmp_path / "logs.xlsx"
    path.write_text("")
    with pytest.raises(DataError, match=r"logs.xlsx: unknown long-format extension '.xlsx'"):
        load_long_format(path)
    with pytest.raises(DataError, match=r"unknown long-format extension"):
        write_long_format(hand_made(), Path(tmp_path / "out.txt"))
