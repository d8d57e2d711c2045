"""Multi-turn conversations: how often the model changes mid-conversation, and at what quality
and cost, routed turn by turn versus with the gateway's session rule.

Conversations are built from RouterBench's ARC-Challenge questions: the question, then three
follow-ups drawn (seeded) from a fixed list of the kind users send ("Why?", "ok", "Write a
Python function that checks this answer.", ...). A TF-IDF + K-means artifact is fitted on all
11 LLMs' recorded scores (its representative prompts come from the data); every model gets its
mean recorded cost per query and an endpoint, and the default policy is calibrated to an
expected cost of a quarter of the dearest model's. Each conversation is routed three ways,
with the gateway's own functions (``gateway.openai.conversation``, ``deployment.sessions``):

* **last message, per turn**: each turn routed on its last user message alone;
* **with context, per turn**: on the last user message after the earlier user turns (600
  characters of context, the gateway's default), each turn independently;
* **with context + session rule**: the same decisions, but a turn stays on the conversation's
  model unless its own pick is estimated better by ``session_margin`` (0.05).

Printed per way: model switches per conversation, the share of conversations that switched at
least once, mean cost per conversation (4 turns), the mean estimated error of the models that
answered, and — as the measure of quality, since the follow-ups have no recorded answers — the
mean recorded score, on the conversation's question, of the models that answered its turns
(a follow-up about a question is best answered by a model that gets that question right).
The questions routed include the artifact's representative prompts, as real traffic would.

    nice -n 19 .venv/bin/python benchmarks/multi_turn_sessions.py [--conversations 1000]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from uniroute.artifact import build_artifact
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.deployment import Router
from uniroute.deployment.pool_changes import calibrate
from uniroute.deployment.sessions import apply_session
from uniroute.gateway.openai.conversation import routing_text
from uniroute.registry.calibration import Target
from uniroute.testing.harness import add_recorded_model

FOLLOW_UPS = (
    "Why?",
    "ok",
    "Explain your reasoning step by step.",
    "Write a Python function that checks this answer.",
    "Can you give another example?",
    "Are you sure? Think again about each option.",
    "Thanks.",
    "Summarise that in one sentence.",
)
TURNS = 4
CONTEXT_CHARS = 600
MARGIN = 0.05


def conversations(questions: list[str], n: int, seed: int) -> list[list[str]]:
    """``n`` conversations: a question and TURNS - 1 follow-ups drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(questions), size=min(n, len(questions)), replace=False)
    return [
        [questions[i], *(FOLLOW_UPS[j] for j in rng.choice(len(FOLLOW_UPS), TURNS - 1))]
        for i in picked
    ]


def chat(turns: list[str]) -> list[dict]:
    """The chat messages of a conversation's first turns (answers stand in as "...")."""
    messages: list[dict] = []
    for index, text in enumerate(turns):
        if index:
            messages.append({"role": "assistant", "content": "..."})
        messages.append({"role": "user", "content": text})
    return messages


def main() -> int:
    """Build the pool, route the conversations three ways, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir() / "routerbench")
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = load_dataset(args.data, "routerbench")
    print(f"data: {dataset.summary()}; cores: {os.cpu_count()}; python {sys.version.split()[0]}")
    arc = np.array([str(t).lower().startswith("arc") for t in dataset.tasks])
    texts = [str(t) for t in dataset.prompts]
    row_of = {text: i for i, text in enumerate(texts) if arc[i]}
    questions = list(row_of)
    with tempfile.TemporaryDirectory(prefix="uniroute-sessions-") as tmp:
        artifact = build_artifact(
            dataset, Path(tmp) / "artifact", encoder="tfidf", router="uniroute-kmeans", seed=0,
            router_params={"n_clusters": 10},
        )  # fmt: skip
        router = Router.load(artifact, Path(tmp) / "pool.db")
        for j, model in enumerate(dataset.models):
            cost = float(dataset.model_costs[j])
            add_recorded_model(router, dataset, model, cost, endpoint=f"http://127.0.0.1:9/{j}/v1")
        dearest = float(dataset.model_costs.max())
        policy = calibrate(router, Target("cost", 0.25 * dearest))
        print(f"{len(dataset.models)} models; default λ {policy.lam:.4g} (expected cost "
              f"{policy.expected_cost:.6f} $/query, a quarter of the dearest model's)")  # fmt: skip
        pool = router.snapshot.pool
        score = {m: dataset.scores[:, j] for j, m in enumerate(dataset.models)}
        convs = conversations(questions, args.conversations, args.seed)

        def routed(turns: list[str], context: int) -> list:
            texts_ = [
                turns[k] if context == 0 else routing_text(chat(turns[: k + 1]), turns[k], context)
                for k in range(len(turns))
            ]
            return router.route(texts_)

        # label -> (the models that answered each conversation's turns, the turns' decisions)
        ways: dict[str, tuple[list[list[str]], list[list]]] = {}
        last_only = [routed(c, 0) for c in convs]
        with_context = [routed(c, CONTEXT_CHARS) for c in convs]
        ways["last message, per turn"] = ([[d.model for d in ds] for ds in last_only], last_only)
        ways["with context, per turn"] = (
            [[d.model for d in ds] for ds in with_context],
            with_context,
        )
        sessions = []
        for decisions in with_context:
            previous, models = None, []
            for decision in decisions:
                previous = apply_session(decision, previous, MARGIN).ranking[0]
                models.append(previous)
            sessions.append(models)
        ways["with context + session rule"] = (sessions, with_context)
        print(f"\n{len(convs)} conversations of {TURNS} turns (ARC question + follow-ups)\n")
        print(
            "| routing | switches / conversation | conversations that switch | cost / "
            "conversation ($) | estimated error | score of answering models on the question |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for label, (models_per_conv, decisions_per_conv) in ways.items():
            switches = [sum(a != b for a, b in itertools.pairwise(m)) for m in models_per_conv]
            costs = [sum(pool.cost(x) for x in m) for m in models_per_conv]
            errors, quality = [], []
            for conv, models, decisions in zip(
                convs, models_per_conv, decisions_per_conv, strict=True
            ):
                row = row_of[conv[0]]
                for model, decision in zip(models, decisions, strict=True):
                    errors.append(decision.estimated_errors[model])
                    quality.append(score[model][row])
            print(
                f"| {label} | {np.mean(switches):.2f} | {np.mean(np.array(switches) > 0):.1%} | "
                f"{np.mean(costs):.6f} | {np.mean(errors):.4f} | {np.nanmean(quality):.4f} |"
            )
        router.registry.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
