"""load_dataset over files and folders, and cost maps."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from uniroute.data import FORMATS, DataError, load_cost_map, load_dataset


def test_formats_are_the_four_supported_names():
    assert FORMATS == ("routerbench", "routerdc", "embedllm", "long")


def test_routerbench_folder_merges_every_file_in_name_order(shared_data):
    folder = shared_data / "routerbench"
    whole = load_dataset(folder, "routerbench")
    parts = [load_dataset(path, "routerbench") for path in sorted(folder.glob("*.csv"))]
    assert whole.name == "routerbench"
    assert whole.n_prompts == sum(p.n_prompts for p in parts) == 1911
    assert whole.n_models == 11
    assert np.array_equal(whole.scores, np.concatenate([p.scores for p in parts]), equal_nan=True)
    assert len(set(whole.prompt_ids)) == whole.n_prompts
    assert set(whole.meta["responses"]) == set(whole.models)


def test_routerdc_folder_with_the_shared_cost_map(shared_data):
    cost_path = shared_data / "costs" / "mmlupro27.json"
    dataset = load_dataset(shared_data / "mmlupro27", "routerdc", costs=cost_path)
    raw = json.loads(cost_path.read_text())
    assert dataset.n_models == 27
    assert dataset.model_costs.tolist() == [float(raw[m]) for m in dataset.models]
    assert len(set(dataset.tasks)) == 14


def test_routerdc_single_file(shared_data):
    dataset = load_dataset(shared_data / "routerdc7" / "gsm8k-test.json", "routerdc")
    assert dataset.n_models == 7
    assert set(dataset.tasks) == {"gsm8k"}
    assert dataset.prompt_ids[0] == "gsm8k-test/0"


def test_long_folder_reads_every_encoding(tmp_path):
    (tmp_path / "a.csv").write_text("prompt_id,prompt,model,score,cost\nq1,Q,m1,1,1\n")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"prompt_id": "q1", "prompt": "Q", "model": "m2", "score": 0, "cost": 3}) + "\n"
    )
    (tmp_path / "notes.txt").write_text("not data")
    dataset = load_dataset(tmp_path, "long")
    assert dataset.models == ["m1", "m2"]
    assert dataset.scores.tolist() == [[1.0, 0.0]]
    assert dataset.model_costs.tolist() == [1.0, 3.0]


def test_cost_map_must_cover_every_model(tmp_path):
    (tmp_path / "a.csv").write_text("prompt_id,prompt,model,score\nq1,Q,m1,1\nq1,Q,m2,0\n")
    with pytest.raises(DataError, match=r"no cost for models \['m2'\]"):
        load_dataset(tmp_path / "a.csv", "long", costs={"m1": 1.0})
    dataset = load_dataset(tmp_path / "a.csv", "long", costs={"m1": 1.0, "m2": 0})
    assert dataset.model_costs.tolist() == [1.0, 0.0]


def test_unknown_format_and_missing_path_are_named(tmp_path):
    with pytest.raises(DataError, match=r"unknown data format 'csv'; choose one of"):
        load_dataset(tmp_path, "csv")
    with pytest.raises(DataError, match=r"nowhere: no such file or folder"):
        load_dataset(tmp_path / "nowhere", "long")
    with pytest.raises(DataError, match=r"no routerdc data files \(looked for .json\)"):
        load_dataset(tmp_path, "routerdc")


def test_load_cost_map_reads_numbers(tmp_path):
    path = tmp_path / "costs.json"
    path.write_text('{"a": 1, "b": 0.25, "c": 0}')
    assert load_cost_map(path) == {"a": 1.0, "b": 0.25, "c": 0.0}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1,', r"costs.json: not valid JSON \(line 1"),
        ("[1, 2]", r"costs.json: expected a JSON object \{model name: cost\}, got list"),
        ('{"a": "cheap"}', r"costs.json: cost of model 'a' is not a number: 'cheap'"),
        ('{"a": true}', r"costs.json: cost of model 'a' is not a number: True"),
        ('{"a": -1}', r"costs.json: cost of model 'a' must be a finite number >= 0, got -1"),
        ('{"a": NaN}', r"costs.json: the file holds NaN, which is not JSON"),
        ('{"a": 1e999}', r"costs.json: the file holds the number 1e999, too big for a 64-bit"),
        ("{}", r"costs.json: the cost map is empty"),
    ],
)
def test_bad_cost_maps_are_named(tmp_path, text, expected):
    path = tmp_path / "costs.json"
    path.write_text(text)
    with pytest.raises(DataError, match=expected):
        load_cost_map(path)
    with pytest.raises(DataError, match=expected):
        load_dataset(tmp_path, "routerdc", costs=path)


def test_missing_cost_map_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"absent.json: cost map not found"):
        load_cost_map(tmp_path / "absent.json")


def test_importing_the_package_leaves_pandas_unloaded():
    code = "import sys, uniroute.data; print('pandas' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
