"""Loaders keep each model's answer per prompt as a canonical key (RoutingDataset.answers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from uniroute.answers import answer_key
from uniroute.data import DataError, load_dataset
from uniroute.data.dataset import RoutingDataset
from uniroute.data.long_format import load_long_format, write_long_format


@pytest.fixture(scope="module")
def routerbench(shared_data: Path) -> RoutingDataset:
    """Both real RouterBench files (ARC-Challenge and MBPP)."""
    return load_dataset(shared_data / "routerbench", "routerbench")


def test_routerbench_arc_answers_are_letters_and_mbpp_has_none(routerbench) -> None:
    answers = routerbench.answers
    assert answers is not None and answers.shape == routerbench.scores.shape
    arc = routerbench.tasks == "arc-challenge"
    arc_keys = [a for a in answers[arc].flat if a is not None]
    assert len(arc_keys) > 0.9 * answers[arc].size
    assert set(arc_keys) <= set("ABCDEFGHIJ") and {"A", "B", "C", "D"} <= set(arc_keys)
    assert all(a is None for a in answers[~arc].flat)
    # Each key is the response's key, read with the prompt's options.
    responses = routerbench.meta["responses"]
    for i in np.flatnonzero(arc)[::150]:
        for j, model in enumerate(routerbench.models):
            expected = answer_key(responses[model][i], "choice", routerbench.prompts[i])
            assert answers[i, j] == expected


def test_routerbench_correct_answers_agree(routerbench) -> None:
    """Two models both scored correct on a prompt name the same letter (nearly always)."""
    arc = np.flatnonzero(routerbench.tasks == "arc-challenge")
    gpt4 = routerbench.model_index("gpt-4-1106-preview")
    yi = routerbench.model_index("zero-one-ai/Yi-34B-Chat")
    both = arc[(routerbench.scores[arc, gpt4] == 1) & (routerbench.scores[arc, yi] == 1)]
    same = np.mean([routerbench.answers[i, gpt4] == routerbench.answers[i, yi] for i in both])
    assert len(both) > 1000 and same > 0.97


def test_subset_and_concat_carry_answers(routerbench) -> None:
    part = routerbench.subset([3, 1], ["claude-v1", "gpt-4-1106-preview"])
    columns = [routerbench.model_index("claude-v1"), routerbench.model_index("gpt-4-1106-preview")]
    assert part.answers.tolist() == routerbench.answers[np.ix_([3, 1], columns)].tolist()
    merged = RoutingDataset.concat([part, routerbench.subset([5], ["claude-v1"])])
    assert merged.answers.shape == (3, 2)
    assert (
        merged.answers[2, 1] is None and merged.answers[2, 0] == routerbench.answers[5, columns[0]]
    )
    assert routerbench.with_costs(dict.fromkeys(routerbench.models, 1.0)).answers is not None


def test_mmlupro27_answers_match_the_json(shared_data: Path) -> None:
    path = shared_data / "mmlupro27" / "biology.json"
    records = json.loads(path.read_text())
    dataset = load_dataset(path, "routerdc")
    assert dataset.answers is not None
    for i in range(0, len(records), 37):
        for j, model in enumerate(dataset.models):
            assert dataset.answers[i, j] == records[i].get("answers", {}).get(model)


def test_routerdc_without_answers_has_none(shared_data: Path) -> None:
    dataset = load_dataset(shared_data / "routerdc7" / "mbpp.json", "routerdc")
    assert dataset.answers is None


def test_routerdc_bad_answer_is_named(tmp_path: Path) -> None:
    path = tmp_path / "arc_test.json"
    path.write_text(json.dumps([{"question": "q", "scores": {"m": 1}, "answers": {"m": 3}}]))
    with pytest.raises(DataError, match=r"record 1.*model 'm'.*answer 3"):
        load_dataset(path, "routerdc")


def test_long_format_answer_column_round_trips(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "prompt_id": ["p1", "p1", "p2", "p2"],
            "prompt": ["2+2?", "2+2?", "Pick\nA) x\nB) y", "Pick\nA) x\nB) y"],
            "model": ["m1", "m2", "m1", "m2"],
            "score": [1, 1, 0, 1],
            "cost": [1, 2, 1, 2],
            "task": ["gsm8k", "gsm8k", "arc", "arc"],
            "answer": ["#### 4", "The answer is 4.0", "A", ""],
        }
    )
    path = tmp_path / "logs.csv"
    frame.to_csv(path, index=False)
    dataset = load_long_format(path)
    assert dataset.answers.tolist() == [["4", "4"], ["A", None]]
    out = tmp_path / "again.jsonl"
    write_long_format(dataset, out)
    assert load_long_format(out).answers.tolist() == dataset.answers.tolist()


def test_answers_must_align_and_be_keys() -> None:
    args = dict(
        prompt_ids=["a"], prompts=["x"], tasks=["t"], models=["m"], model_costs=[1.0],
        scores=[[1.0]],
    )  # fmt: skip
    with pytest.raises(DataError, match=r"answer matrix is \(1, 2\)"):
        RoutingDataset(**args, answers=[[None, None]])
    with pytest.raises(DataError, match="prompt 'a', model 'm' is not a text key"):
        RoutingDataset(**args, answers=[[7]])
