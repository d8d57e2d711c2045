"""Start-up time of the `uniroute` command on a TF-IDF artifact, as a fresh process each time.

Prints the median wall time over ``--runs`` runs of ``python -c pass`` (the floor every
command pays), ``uniroute --help``, ``models list``, ``models show NAME``, ``route "..."`` and
``models add NAME --scores FILE`` (into a fresh copy of the registry each run), each also as a
ratio to ``python -c pass`` measured in the same run. Without ``--artifact`` and ``--registry``
it first builds a TF-IDF artifact and registry of RouterBench in a temporary folder.

    .venv/bin/python benchmarks/cli_startup.py [--runs 7] [--artifact DIR --registry DB]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from uniroute.data.paths import default_data_dir

PROMPT = "What is the capital of Australia?"


def console_script() -> list[str]:
    """The installed `uniroute` script beside this interpreter, as a user runs it."""
    script = Path(sys.executable).with_name("uniroute")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "uniroute.cli.main"]


def wall_seconds(command: Sequence[str], before: Callable[[], None] | None = None) -> float:
    """Seconds one run of ``command`` takes, from spawn to exit; it must succeed."""
    if before is not None:
        before()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return seconds


def build_state(folder: Path) -> tuple[Path, Path]:
    """A TF-IDF artifact and its seeded registry of RouterBench, built in ``folder``."""
    artifact, registry = folder / "artifact", folder / "pool.db"
    command = [
        *console_script(),
        "build",
        "--data",
        str(default_data_dir() / "routerbench"),
        "--format",
        "routerbench",
        "--encoder",
        "tfidf",
        "--no-cache",
        "--out",
        str(artifact),
        "--registry",
        str(registry),
    ]
    print(f"building a TF-IDF artifact in {folder} ...", file=sys.stderr)
    wall_seconds(command)
    return artifact, registry


def write_scores_copy(registry_path: Path, out: Path) -> str:
    """Write one registered model's scores to ``out`` (CSV); the model's name."""
    from uniroute.registry import Registry

    with Registry(registry_path) as registry:
        name = registry.list_models()[0].name
        scores = registry.get_scores(name)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt_id", "score"])
        writer.writerows(sorted(scores.items()))
    return name


def main(argv: list[str] | None = None) -> int:
    """Run every command ``--runs`` times and print one row per command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (median shown)")
    parser.add_argument("--artifact", type=Path, help="a TF-IDF artifact (default: build one)")
    parser.add_argument("--registry", type=Path, help="its registry (default: build one)")
    args = parser.parse_args(argv)
    if (args.artifact is None) != (args.registry is None):
        parser.error("give both --artifact and --registry, or neither")

    with tempfile.TemporaryDirectory(prefix="uniroute-startup-") as tmp:
        folder = Path(tmp)
        if args.artifact is None:
            artifact, registry = build_state(folder)
        else:
            artifact, registry = args.artifact, args.registry
        scores_file = folder / "scores.csv"
        model = write_scores_copy(registry, scores_file)
        registry_copy = folder / "copy.db"

        def fresh_copy() -> None:
            # Each `models add` writes into an untouched copy, so every run does the same work.
            registry_copy.unlink(missing_ok=True)
            shutil.copyfile(registry, registry_copy)

        uniroute = console_script()
        located = ["--artifact", str(artifact), "--registry", str(registry)]
        cases: list[tuple[str, list[str], Callable[[], None] | None]] = [
            ("python -c pass", [sys.executable, "-c", "pass"], None),
            ("uniroute --help", [*uniroute, "--help"], None),
            ("models list", [*uniroute, "models", "list", *located], None),
            (f"models show {model}", [*uniroute, "models", "show", model, *located], None),
            (f'route "{PROMPT}"', [*uniroute, "route", PROMPT, *located], None),
            (
                "models add --scores (registry copy)",
                [
                    *uniroute,
                    "models",
                    "add",
                    "bench-new-model",
                    "--cost",
                    "0.001",
                    "--scores",
                    str(scores_file),
                    "--artifact",
                    str(artifact),
                    "--registry",
                    str(registry_copy),
                ],
                fresh_copy,
            ),
        ]
        medians: dict[str, float] = {}
        for label, command, before in cases:
            wall_seconds(command, before)  # warm-up: the page cache, .pyc files
            runs = [wall_seconds(command, before) for _ in range(args.runs)]
            medians[label] = statistics.median(runs)

    floor = medians["python -c pass"]
    width = max(len(label) for label in medians)
    print(f"median of {args.runs} runs, TF-IDF artifact {artifact}")
    print(f"{'command':<{width}}  {'seconds':>8}  {'x python -c pass':>16}")
    for label, seconds in medians.items():
        print(f"{label:<{width}}  {seconds:>8.3f}  {seconds / floor:>16.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
