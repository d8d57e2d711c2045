"""Do our graders agree with RouterBench's own scores? Onboard every recorded model end to end.

For each RouterBench model: start a replay server on loopback that answers with that model's
recorded responses, onboard it with ``onboard_endpoint`` on all ARC-Challenge prompts (train and
test) that have a derived reference letter, and compare each grade with the score RouterBench
recorded for that answer.

    .venv/bin/python benchmarks/grader_agreement.py [--data DIR] [--models A,B] [--show N]

Prints one row per model: prompts compared, agreement (%), our accuracy, RouterBench's accuracy
on the same prompts, answers our grader could not read, and the onboarding time.

The reference letters are derived from the recorded answers and scores of all models, this
model's included, so agreement there is partly built in. The ``loo`` columns remove that: the
same answers graded against references derived from the *other* models only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from uniroute.data.dataset import RoutingDataset
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.data.representative import RepresentativePrompt
from uniroute.onboarding.client import onboard_endpoint
from uniroute.onboarding.graders import grader_for
from uniroute.onboarding.references import attach_references
from uniroute.testing.replay import ReplayServerProcess

TARGET = 0.95


def _prompts_with_references(dataset: RoutingDataset) -> list[RepresentativePrompt]:
    return [
        RepresentativePrompt(
            str(dataset.prompt_ids[i]), str(dataset.prompts[i]), str(dataset.tasks[i]),
            str(dataset.references[i]),
        )
        for i in range(dataset.n_prompts)
        if dataset.references[i] is not None
    ]  # fmt: skip


def _agreement(
    dataset: RoutingDataset, model: str, grades: dict[str, float]
) -> tuple[int, float, float, float, list[tuple[str, float, float]]]:
    """(prompts compared, agreement, our accuracy, RouterBench accuracy, disagreements)."""
    j = dataset.model_index(model)
    rows = [
        i
        for i, prompt_id in enumerate(dataset.prompt_ids)
        if prompt_id in grades and np.isfinite(dataset.scores[i, j])
    ]
    ours = np.array([grades[dataset.prompt_ids[i]] for i in rows])
    recorded = dataset.scores[rows, j]
    disagreements = [
        (str(dataset.prompt_ids[i]), mine, theirs)
        for i, mine, theirs in zip(rows, ours, recorded, strict=True)
        if mine != theirs
    ]
    return len(rows), float(np.mean(ours == recorded)), ours.mean(), recorded.mean(), disagreements


def _leave_one_out_grades(
    arc: RoutingDataset, model: str, answers: dict[str, str]
) -> tuple[RoutingDataset, dict[str, float]]:
    """The answers graded against references derived without this model's answers and scores."""
    others = [m for m in arc.models if m != model]
    loo = arc.subset()
    loo.references = attach_references(arc.subset(models=others)).references
    grades = {}
    for prompt in _prompts_with_references(loo):
        if prompt.prompt_id in answers:
            grader = grader_for(prompt.task)
            grades[prompt.prompt_id] = grader.grade(
                answers[prompt.prompt_id], prompt.reference, prompt
            )
    return loo, grades


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table; exit status 1 if a model misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir() / "routerbench")
    parser.add_argument("--models", default="", help="comma-separated subset of the models")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--show", type=int, default=3, help="disagreements to print per model")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    full = load_dataset(args.data, "routerbench")
    arc = full.subset([i for i, task in enumerate(full.tasks) if str(task).startswith("arc")])
    dataset = attach_references(arc)
    prompts = _prompts_with_references(dataset)
    rules = dataset.meta["reference_stats"]["by_rule"]
    print(f"data: {args.data} ({dataset.n_prompts} ARC-Challenge prompts, train + test)")
    print(
        f"references derived for {len(prompts)} of {dataset.n_prompts} prompts: "
        + ", ".join(f"{rule} {count}" for rule, count in sorted(rules.items()))
    )
    models = [m for m in args.models.split(",") if m] or dataset.models

    header = (
        f"{'model':<34} {'prompts':>7} {'agree':>7} {'ours':>6} {'RB':>6} {'unread':>6} "
        f"{'time':>5}  {'prompts-loo':>11} {'agree-loo':>9}"
    )
    print(header)
    print("-" * len(header), flush=True)
    worst = worst_loo = 1.0
    examples: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        for model in models:
            with ReplayServerProcess(args.data, model) as server:
                result = onboard_endpoint(
                    model, server.v1_url, prompts, concurrency=args.concurrency,
                    cache_path=Path(scratch) / "answers.sqlite3", progress=False,
                )  # fmt: skip
            n, agree, ours, theirs, disagreements = _agreement(dataset, model, result.scores)
            loo_dataset, loo_grades = _leave_one_out_grades(arc, model, result.answers)
            n_loo, agree_loo, *_ = _agreement(loo_dataset, model, loo_grades)
            worst, worst_loo = min(worst, agree), min(worst_loo, agree_loo)
            print(
                f"{model:<34} {n:>7} {agree:>7.2%} {ours:>6.1%} {theirs:>6.1%} "
                f"{len(result.ungradeable):>6} {result.elapsed_s:>4.1f}s  {n_loo:>11} "
                f"{agree_loo:>9.2%}",
                flush=True,
            )
            for prompt_id, mine, recorded in disagreements[: args.show]:
                examples.append(
                    f"{model} {prompt_id}: answer {result.answers[prompt_id]!r}, reference "
                    f"{dataset.references[list(dataset.prompt_ids).index(prompt_id)]}, "
                    f"ours {mine:.0f}, RouterBench {recorded:.0f}"
                )
    elapsed = time.perf_counter() - started
    print(
        f"\nlowest agreement {worst:.2%}, leave-one-out {worst_loo:.2%} "
        f"(target {TARGET:.0%}); {elapsed:.0f} s in all"
    )
    if examples:
        print("disagreements:")
        print("\n".join(f"  {e}" for e in examples))
    return 0 if min(worst, worst_loo) >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
