"""Print the results table of one or more `uniroute eval` runs, with the paired comparisons.

For each results.json: the Markdown table `uniroute eval` prints, then, for each router, its
per-trial area difference to ZeroRouter and to K-NN (mean ± std) with the sign test.

    python benchmarks/summarize_results.py out/*/results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uniroute.evaluation.report import results_table_markdown


def comparisons_markdown(results: dict) -> str:
    """A table of each router's paired area difference to each baseline, with the sign test."""
    baselines = sorted({b for r in results["routers"].values() for b in r.get("sign_tests", {})})
    header = "| router | " + " | ".join(f"area − {b} (W/L/T, p)" for b in baselines) + " |"
    lines = [header, "|---|" + "---|" * len(baselines)]
    for name, entry in results["routers"].items():
        cells = []
        for baseline in baselines:
            test = entry.get("sign_tests", {}).get(baseline)
            if test is None:
                cells.append("—")
                continue
            cells.append(
                f"{test['mean_area_difference']:+.4f} ± {test['std_area_difference']:.4f} "
                f"({test['wins']}/{test['losses']}/{test['ties']}, p = {test['p_value']:.3g})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Print the tables of every results.json given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files")
    args = parser.parse_args()
    for path in args.results:
        results = json.loads(path.read_text())
        print(
            f"## {results['dataset']} — encoder {results['encoder']}, {results['trials']} trials, "
            f"{results['test_models']} unseen test LLMs ({path})\n"
        )
        print(results_table_markdown(results))
        print()
        print(comparisons_markdown(results))
        print()


if __name__ == "__main__":
    main()
