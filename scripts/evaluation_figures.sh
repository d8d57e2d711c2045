#!/usr/bin/env bash
# Regenerate the evaluation figures of docs/EVALUATION.md: run the demo's evaluation (the
# `make demo` command: RouterBench, MiniLM, 5 unseen test LLMs, 20 trials, seed 0) into
# out/demo, then copy its deferral.png and paired_differences.png into docs/img/.
# Run from anywhere; takes a few minutes (the embedding cache makes re-runs faster).
# UNIROUTE_DATA (default ../shared/data beside the checkout) and VENV (.venv) as in the Makefile.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
DATA=${UNIROUTE_DATA:-../shared/data}
OUT=out/demo

nice -n 19 "$BIN/uniroute" eval --data "$DATA/routerbench" --format routerbench \
    --encoder minilm --test-models 5 --trials 20 --seed 0 --out "$OUT"
mkdir -p docs/img
cp "$OUT/deferral.png" docs/img/eval-routerbench-deferral.png
cp "$OUT/paired_differences.png" docs/img/eval-routerbench-paired.png
echo "wrote docs/img/eval-routerbench-deferral.png and docs/img/eval-routerbench-paired.png"
