"""Models' answers on the way into the pool: scores with answers, onboarding, seeding, snapshots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from uniroute.answers import answer_key
from uniroute.artifact import Artifact
from uniroute.data.dataset import RoutingDataset
from uniroute.data.representative import RepresentativePrompt
from uniroute.data.routerbench import responses_by_prompt
from uniroute.deployment import Router
from uniroute.deployment.pool_changes import (
    add_scored_model,
    answer_kind,
    canonical_answers,
    onboard_model,
    remove_model,
)
from uniroute.onboarding.graders import (
    CodeGrader,
    ExactMatchGrader,
    MultipleChoiceGrader,
    NumericGrader,
)
from uniroute.registry import MAX_RAW_ANSWER_CHARS, ModelCost, ModelRecord, Registry

HELD_OUT = "gpt-4-1106-preview"


@pytest.fixture
def router(arc_artifact: Artifact, tmp_path: Path) -> Router:
    """A Router over the shared ARC artifact and an empty registry of its own."""
    return Router.load(arc_artifact, Registry(tmp_path / "pool.db"))


def _recorded(dataset: RoutingDataset, model: str) -> tuple[dict[str, float], dict[str, str]]:
    column = dataset.scores[:, dataset.model_index(model)]
    scores = {str(p): float(s) for p, s in zip(dataset.prompt_ids, column, strict=True)}
    return scores, dict(responses_by_prompt(dataset)[model])


def test_answers_given_with_scores_are_stored_keyed_and_reach_the_pool(
    router: Router, arc_dataset: RoutingDataset
) -> None:
    scores, responses = _recorded(arc_dataset, HELD_OUT)
    record = ModelRecord(name=HELD_OUT, cost=ModelCost(per_query=0.006))
    answers = {**responses, "not-a-representative-prompt": "B"}
    added = add_scored_model(router, record, scores, answers=answers, source="recorded")
    artifact = router.artifact
    asked = [p for p in artifact.representative_prompts if p.prompt_id in responses]
    assert added.n_answers == len(asked) > 0
    assert "not-a-representative-prompt" in added.unknown_ids

    stored = router.registry.get_answers(HELD_OUT)
    assert set(stored) == {p.prompt_id for p in asked}
    for prompt in asked:
        raw = responses[prompt.prompt_id]
        assert stored[prompt.prompt_id].raw == raw[:MAX_RAW_ANSWER_CHARS]
        assert stored[prompt.prompt_id].key == answer_key(raw, "choice", prompt.text)
    # The key is the letter the grader read: a prompt scored 1 has the reference's letter.
    right = [p for p in asked if scores.get(p.prompt_id) == 1.0 and p.reference]
    assert right and all(stored[p.prompt_id].key == p.reference for p in right)
    assert added.n_answer_keys == sum(a.key is not None for a in stored.values())

    pool = router.snapshot.pool
    assert pool.answers is not None and pool.answers.shape == pool.scores.shape
    column = pool.answers[:, pool.index(HELD_OUT)]
    expected = [stored[p].key if p in stored else None for p in artifact.prompt_ids]
    assert column.tolist() == expected
    assert pool.select([HELD_OUT]).answers[:, 0].tolist() == expected


def test_a_pool_without_any_answer_has_none_and_gets_them_when_a_model_brings_some(
    router: Router, arc_dataset: RoutingDataset
) -> None:
    scores, responses = _recorded(arc_dataset, HELD_OUT)
    add_scored_model(router, ModelRecord(name="plain", cost=ModelCost(per_query=0.001)), scores)
    assert router.snapshot.pool.answers is None
    add_scored_model(
        router,
        ModelRecord(name=HELD_OUT, cost=ModelCost(per_query=0.006)),
        scores,
        answers=responses,
    )
    pool = router.snapshot.pool
    assert pool.answers is not None
    assert set(pool.answers[:, pool.index("plain")].tolist()) == {None}
    assert any(key is not None for key in pool.answers[:, pool.index(HELD_OUT)])
    remove_model(router, HELD_OUT)
    assert router.snapshot.pool.answers is None  # the model took its answers with it


def test_replacing_a_model_replaces_its_answers_in_the_next_snapshot(
    router: Router, arc_dataset: RoutingDataset
) -> None:
    scores, responses = _recorded(arc_dataset, HELD_OUT)
    record = ModelRecord(name=HELD_OUT, cost=ModelCost(per_query=0.006))
    add_scored_model(router, record, scores, answers=responses)
    first = router.snapshot.pool
    everything_c = {prompt_id: "The answer is C." for prompt_id in responses}
    add_scored_model(router, record, scores, answers=everything_c, replace=True)
    pool = router.snapshot.pool
    assert set(pool.answers[:, pool.index(HELD_OUT)].tolist()) == {"C"}
    assert set(first.answers[:, first.index(HELD_OUT)].tolist()) != {"C"}  # old one unchanged


def test_seeded_training_models_carry_the_datas_answer_keys(seeded: Router) -> None:
    artifact = seeded.artifact
    assert artifact.training_answers is not None
    assert artifact.training_answers.shape == artifact.training_scores.shape
    pool = seeded.snapshot.pool
    assert pool.answers is not None
    for j, name in enumerate(artifact.training_models):
        np.testing.assert_array_equal(
            pool.answers[:, pool.index(name)], artifact.training_answers[:, j]
        )
    # Recorded data keeps keys only: no raw text for the training models.
    name = artifact.training_models[0]
    assert {a.raw for a in seeded.registry.get_answers(name).values()} == {None}


def test_answer_kinds_follow_the_graders() -> None:
    assert answer_kind(MultipleChoiceGrader()) == "choice"
    assert answer_kind(NumericGrader()) == "number"
    assert answer_kind(ExactMatchGrader()) == "exact"
    assert answer_kind(CodeGrader()) is None
    prompts = [
        RepresentativePrompt("m", "Which?\nA) one\nB) two", "arc-challenge", "B"),
        RepresentativePrompt("n", "How many?", "gsm8k", "42"),
        RepresentativePrompt("c", "Write f.", "mbpp", None),
        RepresentativePrompt("x", "Capital of France?", "trivia", "Paris"),
    ]
    raw = {"m": "I pick (B)", "n": "so #### 1,000", "c": "def f(): pass", "x": "The Paris!"}
    stored = canonical_answers(prompts, raw)
    assert {p: a.key for p, a in stored.items()} == {
        "m": "B", "n": "1000", "c": None, "x": "paris",
    }  # fmt: skip
    assert stored["c"].raw == "def f(): pass"  # no key, but the answer is kept
    # An override grader decides the kind, as it decides the grade during onboarding.
    overridden = canonical_answers(prompts, raw, {"trivia": MultipleChoiceGrader()})
    assert overridden["x"].key is None and overridden["m"].key == "B"


def test_onboarding_through_a_replayed_endpoint_records_every_answer(
    router: Router, arc_dataset: RoutingDataset, arc_file: Path, tmp_path: Path
) -> None:
    from uniroute.testing.replay import ReplayServerProcess

    _, responses = _recorded(arc_dataset, HELD_OUT)
    cache = tmp_path / "answers.sqlite3"
    with ReplayServerProcess(arc_file, HELD_OUT) as server:
        record = ModelRecord(name=HELD_OUT, cost=ModelCost(per_query=0.006), endpoint=server.v1_url)
        first = onboard_model(router, record, cache_path=cache, concurrency=16)
        stored = router.registry.get_answers(HELD_OUT)
        # Again from the answer cache: the cached answers are recorded just the same.
        again = onboard_model(router, record, cache_path=cache, replace=True)
    assert first.result.answers_fetched > 0 and again.result.answers_from_cache == len(stored)
    assert again.result.answers_fetched == 0
    assert router.registry.get_answers(HELD_OUT) == stored
    prompts = {p.prompt_id: p for p in router.artifact.representative_prompts}
    assert set(stored) == set(first.result.answers) and first.added.n_answers == len(stored)
    for prompt_id, answer in stored.items():
        # The replay server answers with the recorded response; the key is read from it.
        assert answer.raw == first.result.answers[prompt_id] == responses[prompt_id]
        assert answer.key == answer_key(answer.raw, "choice", prompts[prompt_id].text)
    pool = router.snapshot.pool
    keys = pool.answers[:, pool.index(HELD_OUT)]
    assert sum(k is not None for k in keys) == first.added.n_answer_keys > 0.9 * len(stored)
