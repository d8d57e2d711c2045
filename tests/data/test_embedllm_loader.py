"""EmbedLLM loader on a fixture in the published folder layout, and on malformed copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from uniroute.data import DataError, load_dataset
from uniroute.data.embedllm import load_embedllm

# Hand-read from tests/data/fixtures/embedllm/{train,val,test}.csv: rows are prompt ids 0..5,
# columns model ids 0..2; model 2 never answered prompt 2 and model 0 never answered prompt 3.
EXPECTED_SCORES = np.array(
    [
        [1, 1, 0],
        [0, 1, 1],
        [0, 1, np.nan],
        [np.nan, 0, 1],
        [0, 0, 1],
        [1, 1, 0],
    ],
    dtype=float,
)
EXPECTED_MODELS = ["meta-llama/Llama-2-7b-hf", "mistralai/Mistral-7B-v0.1", "google/gemma-7b"]


@pytest.fixture
def folder_copy(embedllm_fixture, tmp_path) -> Path:
    return Path(shutil.copytree(embedllm_fixture, tmp_path / "embedllm"))


def test_fixture_merges_train_val_test_into_one_matrix(embedllm_fixture):
    dataset = load_embedllm(embedllm_fixture)
    assert list(dataset.prompt_ids) == ["0", "1", "2", "3", "4", "5"]
    assert dataset.models == EXPECTED_MODELS
    assert np.array_equal(dataset.scores, EXPECTED_SCORES, equal_nan=True)
    assert list(dataset.tasks) == [
        "mmlu_elementary_mathematics",
        "mmlu_astronomy",
        "gsm8k",
        "mmlu_professional_law",
        "truthfulqa_mc1",
        "gsm8k",
    ]
    assert dataset.prompts[0] == "What is 7 * 8?\nA. 54\nB. 56\nC. 58\nD. 64\nAnswer:"
    assert dataset.prompts[5].startswith("Sam walks 2 km to school")
    assert dataset.model_costs.tolist() == [1.0, 1.0, 1.0]


def test_load_dataset_reads_the_folder_with_a_cost_map(embedllm_fixture):
    costs = {EXPECTED_MODELS[0]: 7.0, EXPECTED_MODELS[1]: 7.3, EXPECTED_MODELS[2]: 8.5}
    dataset = load_dataset(embedllm_fixture, "embedllm", costs=costs)
    assert dataset.model_costs.tolist() == [7.0, 7.3, 8.5]
    assert np.array_equal(dataset.scores, EXPECTED_SCORES, equal_nan=True)


def append_rows(path: Path, *lines: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))


def test_same_pair_with_the_same_label_twice_is_kept_once(folder_copy):
    append_rows(folder_copy / "test.csv", "0,1,0,1,mistralai/Mistral-7B-v0.1,mmlu_x,q")
    dataset = load_embedllm(folder_copy)
    assert np.array_equal(dataset.scores, EXPECTED_SCORES, equal_nan=True)


def test_same_pair_with_different_labels_is_an_error(folder_copy):
    append_rows(folder_copy / "test.csv", "0,2,0,1,google/gemma-7b,mmlu_x,q")
    with pytest.raises(DataError) as error:
        load_embedllm(folder_copy)
    message = str(error.value)
    assert f"{folder_copy / 'test.csv'}, row 4" in message
    assert f"{folder_copy / 'train.csv'}, row 3" in message
    assert "model_id '2' on prompt_id '0' has label" in message


def test_conflicting_pairs_can_be_recorded_as_missing(folder_copy):
    append_rows(folder_copy / "test.csv", "0,2,0,1,google/gemma-7b,mmlu_x,q")
    dataset = load_embedllm(folder_copy, on_conflict="missing")
    expected = EXPECTED_SCORES.copy()
    expected[0, 2] = np.nan
    assert np.array_equal(dataset.scores, expected, equal_nan=True)
    assert dataset.meta["conflicting_pairs"] == 1


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("5,9,2,1,x,gsm8k,q", r"test.csv, row 4: model_id '9' is not in .*model_order.csv"),
        ("77,0,2,1,x,gsm8k,q", r"test.csv, row 4: prompt_id '77' is not in .*question_order.csv"),
        ("5,0,2,yes,x,gsm8k,q", r"test.csv, row 4, column 'label': 'yes' is not a number"),
        ("5,0,2,2,x,gsm8k,q", r"test.csv, row 4, column 'label': 2.0 is outside \[0, 1\]"),
        ("5,0,2,,x,gsm8k,q", r"test.csv, row 4, column 'label': empty cell"),
        (",0,2,1,x,gsm8k,q", r"test.csv, row 4: empty 'prompt_id'"),
    ],
)
def test_bad_data_row_names_file_row_and_column(folder_copy, line, expected):
    append_rows(folder_copy / "test.csv", line)
    with pytest.raises(DataError, match=expected):
        load_embedllm(folder_copy)


def test_missing_required_column_is_named(folder_copy):
    (folder_copy / "val.csv").write_text("prompt_id,model_id,category\n4,0,truthfulqa_mc1\n")
    with pytest.raises(DataError, match=r"val.csv: missing column\(s\) \['label'\]"):
        load_embedllm(folder_copy)


def test_without_tables_prompts_and_names_come_from_the_data_rows(folder_copy):
    (folder_copy / "question_order.csv").unlink()
    (folder_copy / "model_order.csv").unlink()
    dataset = load_embedllm(folder_copy)
    assert dataset.models == EXPECTED_MODELS
    assert set(dataset.prompt_ids) == {"0", "1", "2", "3", "4", "5"}
    row = list(dataset.prompt_ids).index("2")
    assert dataset.prompts[row].startswith("Janet has 3 apples")
    assert dataset.tasks[row] == "gsm8k"


def test_without_tables_or_prompt_column_the_missing_text_is_named(folder_copy):
    (folder_copy / "question_order.csv").unlink()
    (folder_copy / "val.csv").write_text("prompt_id,model_id,label\n4,0,1\n")
    with pytest.raises(DataError, match=r"val.csv: no 'prompt' column and no question_order.csv"):
        load_embedllm(folder_copy)


def test_repeated_id_in_a_table_is_named(folder_copy):
    append_rows(folder_copy / "model_order.csv", "1,another/model")
    with pytest.raises(DataError, match=r"model_order.csv, row 4: model_id '1' repeats row 2"):
        load_embedllm(folder_copy)


def test_folder_without_data_files_is_named(tmp_path):
    with pytest.raises(DataError, match="no EmbedLLM data files"):
        load_embedllm(tmp_path)
