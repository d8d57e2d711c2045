"""How much can routing by topic gain on a data set? Prints the area of UniRoute with perfect topic
clusters (one cluster per task label, known exactly) next to ZeroRouter, on the same trials as
`uniroute eval`.

If this "task oracle" barely beats ZeroRouter, the prompts' topics say little about which LLM is
right, and no prompt-clustering router (UniRoute or K-NN) can do much better on that data: the gap
to the per-prompt oracle is question-level luck, not topic.

    python benchmarks/topic_headroom.py --data ../shared/data/mmlupro27 --format routerdc \
        --costs ../shared/data/costs/mmlupro27.json --test-models 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from uniroute.data.loading import FORMATS, load_dataset
from uniroute.evaluation.stats import mean_std, sign_test
from uniroute.evaluation.trials import TrialConfig, run_trials


def task_one_hot(tasks: np.ndarray) -> np.ndarray:
    """One-hot embedding of each prompt's task label: K-means on it recovers the tasks exactly."""
    labels = sorted(set(tasks.tolist()))
    X = np.zeros((len(tasks), len(labels)))
    X[np.arange(len(tasks)), [labels.index(t) for t in tasks]] = 1.0
    return X


def main() -> None:
    """Run the task-cluster router and ZeroRouter over the trials and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--costs", type=Path)
    parser.add_argument("--test-models", type=int, required=True)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dataset = load_dataset(args.data, args.format, costs=args.costs)
    n_tasks = len(set(dataset.tasks.tolist()))
    config = TrialConfig(
        routers=["uniroute-kmeans", "zero", "oracle"],
        test_models=args.test_models,
        trials=args.trials,
        seed=args.seed,
        router_params={"uniroute-kmeans": {"n_clusters": n_tasks}},
    )
    run = run_trials(dataset, lambda: None, config, fixed_embeddings=task_one_hot(dataset.tasks))
    areas = {name: np.array(r["per_trial"]["area"]) for name, r in run.results["routers"].items()}
    print(f"{dataset.summary()}; {args.trials} trials, {args.test_models} unseen test LLMs")
    labels = {
        "uniroute-kmeans": f"task clusters (K={n_tasks})",
        "zero": "ZeroRouter",
        "oracle": "per-prompt oracle",
    }
    for name, label in labels.items():
        mean, std = mean_std(areas[name].tolist())
        print(f"  {label:<28} area {mean:.4f} ± {std:.4f}")
    gain = areas["uniroute-kmeans"] - areas["zero"]
    test = sign_test(areas["uniroute-kmeans"], areas["zero"])
    mean, std = mean_std(gain.tolist())
    print(
        f"  task clusters - ZeroRouter: {mean:+.4f} ± {std:.4f} "
        f"(W/L/T {test.wins}/{test.losses}/{test.ties}, p = {test.p_value:.3g})"
    )


if __name__ == "__main__":
    main()
