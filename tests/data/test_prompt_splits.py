"""Seeded model and prompt splits."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from uniroute.data.splits import split_models, split_prompts

MODELS = [f"llm-{i}" for i in range(12)]
TASKS = ["math"] * 50 + ["law"] * 31 + ["code"] * 19 + ["chat"] * 7


def test_split_models_is_disjoint_covering_and_sized():
    train, test = split_models(MODELS, n_test=5, seed=3)
    assert len(test) == 5 and len(train) == 7
    assert set(train).isdisjoint(test)
    assert set(train) | set(test) == set(MODELS)
    assert train == [m for m in MODELS if m in train]  # keeps the given order


def test_split_models_is_reproducible_and_depends_on_the_seed():
    assert split_models(MODELS, 4, seed=11) == split_models(MODELS, 4, seed=11)
    draws = {tuple(split_models(MODELS, 4, seed=s)[1]) for s in range(10)}
    assert len(draws) > 1


@pytest.mark.parametrize(
    ("n_test", "expected"),
    [
        (0, "n_test must be an integer >= 1"),
        (True, "n_test must be an integer >= 1"),
        (11, "leaves 1 for training; at least 2 are needed"),
    ],
)
def test_split_models_rejects_bad_sizes(n_test, expected):
    with pytest.raises(ValueError, match=expected):
        split_models(MODELS, n_test=n_test, seed=0)


def test_split_models_rejects_repeated_names():
    with pytest.raises(ValueError, match=r"model names repeat: \['a'\]"):
        split_models(["a", "b", "a", "c"], n_test=1, seed=0)


def test_split_prompts_is_disjoint_and_covers_every_prompt():
    split = split_prompts(TASKS, seed=5)
    everything = np.concatenate([split.train, split.val, split.test])
    assert sorted(everything.tolist()) == list(range(len(TASKS)))
    for part in split:
        assert np.array_equal(part, np.sort(part))


def test_split_prompts_is_reproducible_and_depends_on_the_seed():
    first, again = split_prompts(TASKS, seed=7), split_prompts(TASKS, seed=7)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a, b)
    other = split_prompts(TASKS, seed=8)
    assert not np.array_equal(first.train, other.train)


def test_split_prompts_keeps_each_task_in_proportion():
    fractions = (0.6, 0.1, 0.3)
    split = split_prompts(TASKS, fractions, seed=1)
    tasks = np.array(TASKS)
    sizes = Counter(TASKS)
    for task, size in sizes.items():
        for part, share in zip(split, fractions, strict=True):
            # Rounding, carried between tasks, moves a count by less than two prompts.
            assert abs(int(np.sum(tasks[part] == task)) - share * size) < 2
    for part, share in zip(split, fractions, strict=True):
        assert abs(len(part) - share * len(TASKS)) <= 1


def test_split_prompts_of_a_single_task_hits_exact_counts():
    split = split_prompts(["t"] * 10, (0.6, 0.1, 0.3), seed=0)
    assert [len(part) for part in split] == [6, 1, 3]


@pytest.mark.parametrize(
    ("fractions", "expected"),
    [
        ((0.5, 0.2, 0.2), "fractions must sum to 1"),
        ((0.7, 0.0, 0.3), "every fraction must be > 0"),
        ((0.5, 0.5), "fractions must be three numbers"),
    ],
)
def test_split_prompts_rejects_bad_fractions(fractions, expected):
    with pytest.raises(ValueError, match=expected):
        split_prompts(TASKS, fractions)


def test_split_prompts_rejects_a_split_that_would_be_empty():
    with pytest.raises(ValueError, match=r"leave the \['val'\] split\(s\) empty"):
        split_prompts(["a", "a"], (0.6, 0.1, 0.3))
    with pytest.raises(ValueError, match="no prompts to split"):
        split_prompts([])
