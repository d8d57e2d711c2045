"""Deriving multiple-choice reference letters from recorded answers and scores."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from uniroute.data.dataset import RoutingDataset
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.data.representative import RepresentativePrompt
from uniroute.data.routerbench import responses_by_prompt
from uniroute.errors import DataError
from uniroute.onboarding.references import attach_references, derive_choice_reference

QUESTION = "Which is a metal?\nA) wood\nB) iron\nC) glass\nD) paper\nAnswer:"
MODELS = ["m1", "m2", "m3", "m4"]


def _dataset(
    rows: list[tuple[str, str, list[float], list[str | None]]], references=None
) -> RoutingDataset:
    """rows: (prompt id, task, scores per model, answers per model)."""
    n = len(rows)
    answers = {m: np.array([r[3][j] for r in rows], dtype=object) for j, m in enumerate(MODELS)}
    ids = np.array([r[0] for r in rows], dtype=object)
    return RoutingDataset(
        prompt_ids=ids,
        prompts=np.array([QUESTION] * n, dtype=object),
        tasks=np.array([r[1] for r in rows], dtype=object),
        models=MODELS,
        model_costs=np.ones(len(MODELS)),
        scores=np.array([r[2] for r in rows], dtype=float),
        references=references,
        name="tiny",
        meta={"responses": answers, "response_prompt_ids": ids.copy()},
    )


NAN = float("nan")
ROWS = [
    # Everyone right says B (one in free text): B.
    ("agree", "arc-challenge", [1, 1, 0, 0], ["B", "The answer is (B).", "A", "C\n"]),
    # No model right; the wrong ones chose A, C and D: only B is left.
    ("none-right", "arc-challenge", [0, 0, 0, 0], ["A", "C", "D", "A"]),
    # Models scored 1 disagree (A and B); a wrong model chose A: B.
    ("disagree", "arc-challenge", [1, 1, 0, NAN], ["A", "B", "A", "D"]),
    # Nobody right and the wrong ones chose only A and C: B or D, unresolved.
    ("ambiguous", "arc-challenge", [0, 0, 0, 0], ["A", "C", "A", "C"]),
    # The only right model's answer holds no letter; a missing score is ignored: unresolved.
    ("unreadable", "arc-challenge", [1, NAN, 0, 0], ["I do", "B", "A", "A"]),
    # Not a multiple-choice task: untouched.
    ("code", "mbpp", [1, 0, 0, 0], ["def f(): pass", "", "", ""]),
]


def test_attach_references_derives_letters_by_the_documented_rules() -> None:
    out = attach_references(_dataset(ROWS))
    assert out.references.tolist() == ["B", "B", "B", None, None, None]
    stats = out.meta["reference_stats"]
    assert stats["by_rule"] == {
        "correct-models-agree": 1,
        "only-letter-no-wrong-model-chose": 2,
        "unresolved": 2,
    }
    assert stats["unresolved_prompt_ids"] == ["ambiguous", "unreadable"]
    assert stats["by_task"] == {"arc-challenge": stats["by_rule"]}


def test_attach_references_keeps_existing_references_and_the_input_unchanged() -> None:
    given = np.array(["D", None, None, None, None, '["assert f() is None"]'], dtype=object)
    dataset = _dataset(ROWS, references=given.copy())
    out = attach_references(dataset)
    assert out.references.tolist() == ["D", "B", "B", None, None, '["assert f() is None"]']
    assert out.meta["reference_stats"]["by_rule"]["kept"] == 1
    assert dataset.references.tolist() == given.tolist()
    assert "reference_stats" not in dataset.meta


def test_attach_references_works_on_a_subset() -> None:
    # subset() keeps the response table of the full data set; answers are found by prompt id.
    out = attach_references(_dataset(ROWS).subset([2, 0]))
    assert out.prompt_ids.tolist() == ["disagree", "agree"]
    assert out.references.tolist() == ["B", "B"]


def test_without_recorded_answers_choice_prompts_keep_no_reference_and_are_counted() -> None:
    given = np.array(["C", None, None, None, None, None], dtype=object)
    for meta in ({}, {"responses": {}}):
        dataset = _dataset(ROWS, references=given.copy())
        dataset.meta = dict(meta)
        out = attach_references(dataset)
        # Kept where given; the other four arc prompts stay without one; mbpp is not touched.
        assert out.references.tolist() == ["C", None, None, None, None, None]
        stats = out.meta["reference_stats"]
        assert stats["by_rule"] == {"kept": 1, "no-recorded-answers": 4}
        assert stats["by_task"] == {"arc-challenge": {"kept": 1, "no-recorded-answers": 4}}
        assert stats["unresolved_prompt_ids"] == []
        assert dataset.references.tolist() == given.tolist()


def test_attach_references_on_real_mmlupro_data_without_answers() -> None:
    path = default_data_dir() / "mmlupro27" / "computer_science.json"
    if not path.is_file():
        pytest.fail(f"shared MMLU-Pro data not found at {path} (set UNIROUTE_DATA)")
    dataset = load_dataset(path, "routerdc")
    out = attach_references(dataset)
    assert out.references.tolist() == [None] * dataset.n_prompts
    assert out.meta["reference_stats"]["by_rule"] == {"no-recorded-answers": dataset.n_prompts}
    np.testing.assert_array_equal(out.scores, dataset.scores)


def test_derive_choice_reference_on_a_single_prompt() -> None:
    prompt = RepresentativePrompt("p", QUESTION, "arc-challenge")
    assert derive_choice_reference(prompt, {"a": "B", "b": "B"}, {"a": 1.0, "b": 1.0}) == (
        "B",
        "correct-models-agree",
    )
    assert derive_choice_reference(prompt, {"a": None, "b": "B"}, {"a": 1.0, "b": 0.0}) == (
        None,
        "unresolved",
    )


def test_responses_by_prompt_reads_both_meta_layouts() -> None:
    full = _dataset(ROWS)
    # The loader's layout: arrays for every recorded prompt, keyed by response_prompt_ids.
    by_id = RoutingDataset(
        prompt_ids=full.prompt_ids[[2, 0]],
        prompts=full.prompts[[2, 0]],
        tasks=full.tasks[[2, 0]],
        models=MODELS,
        model_costs=full.model_costs,
        scores=full.scores[[2, 0]],
        meta=full.meta,
    )
    expected = {"disagree": "A", "agree": "B"}
    assert responses_by_prompt(by_id)["m1"] == expected
    # Arrays aligned with the dataset's own rows.
    aligned_meta = {"responses": {m: full.meta["responses"][m][[2, 0]] for m in MODELS}}
    aligned = dataclasses.replace(by_id, meta=aligned_meta)
    assert responses_by_prompt(aligned)["m1"] == expected


def test_responses_by_prompt_refuses_an_ambiguous_layout() -> None:
    full = _dataset(ROWS)
    order = [1, 0, 2, 3, 4, 5]
    # Arrays re-ordered with the rows while the id array kept the old order: either reading fits.
    shuffled = dataclasses.replace(
        full,
        prompt_ids=full.prompt_ids[order],
        meta={
            "responses": {m: full.meta["responses"][m][order] for m in MODELS},
            "response_prompt_ids": full.prompt_ids.copy(),
        },
    )
    with pytest.raises(DataError, match="unambiguously"):
        responses_by_prompt(shuffled)


def test_responses_by_prompt_follows_a_subset_and_needs_recorded_responses() -> None:
    full = _dataset(ROWS)
    part = full.subset([2, 0])
    # subset() re-aligns the response arrays and their id array alike with the kept rows.
    assert part.meta["response_prompt_ids"].tolist() == ["disagree", "agree"]
    assert responses_by_prompt(part)["m2"] == {"disagree": "B", "agree": "The answer is (B)."}
    for meta in ({}, {"responses": {}}):
        with pytest.raises(DataError, match="no recorded model responses"):
            responses_by_prompt(dataclasses.replace(full, meta=meta))
