"""Encoder speed on real RouterBench prompts: throughput and single-prompt latency.

Prints, for each encoder, prompts/s over a batch of real RouterBench prompts and the median
latency of embedding one ~200-token prompt (RouterBench has none that length, so the probe is
the MMLU-Pro question closest to 200 MiniLM tokens), both also as a ratio to TF-IDF measured in
the same run. A last row gives MiniLM served from the embedding cache (every prompt cached).

    .venv/bin/python benchmarks/encoder_speed.py [--n-prompts 512] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.embeddings import EmbeddingCache, make_encoder
from uniroute.embeddings.base import Encoder
from uniroute.embeddings.cache import CachedEncoder
from uniroute.embeddings.minilm import available_cpus, minilm_model_dir

TARGET_TOKENS = 200


def timed(action: Callable[[], object]) -> float:
    """Seconds one call of ``action`` takes."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def measure(
    encoder: Encoder, batch: Sequence[str], probe: str, repeats: int
) -> tuple[float, float]:
    """(prompts per second over ``batch``, median seconds to embed ``probe`` alone)."""
    encoder.encode([probe], show_progress=False)  # warm-up: lazy loading, allocator, caches
    seconds = timed(lambda: encoder.encode(batch, show_progress=False))
    latencies = [
        timed(lambda: encoder.encode([probe], show_progress=False)) for _ in range(repeats)
    ]
    return len(batch) / seconds, statistics.median(latencies)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one row per encoder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir() / "routerbench")
    parser.add_argument(
        "--probe-data", type=Path, default=default_data_dir() / "mmlupro27" / "law.json"
    )
    parser.add_argument("--n-prompts", type=int, default=512, help="batch size for prompts/s")
    parser.add_argument("--repeats", type=int, default=30, help="single-prompt calls for p50")
    args = parser.parse_args(argv)

    # MiniLM first: loading it sets up torch's threads before anything else imports torch.
    minilm = make_encoder("minilm")
    load_seconds = timed(lambda: minilm.encode(["load"]))
    from transformers import AutoTokenizer

    dataset = load_dataset(args.data, "routerbench")
    prompts = [str(text) for text in dataset.prompts]
    batch = prompts[: args.n_prompts]
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_model_dir()), local_files_only=True)
    # Only counting here: the encoder itself truncates to its window.
    tokenizer.model_max_length = sys.maxsize

    def count_tokens(text: str) -> int:
        return len(tokenizer.tokenize(text))

    batch_tokens = statistics.mean(count_tokens(text) for text in batch)
    probe_dataset = load_dataset(args.probe_data, "routerdc")
    probe_candidates = [str(text) for text in probe_dataset.prompts]
    probe_tokens, probe = min(
        ((count_tokens(text), text) for text in probe_candidates),
        key=lambda pair: abs(pair[0] - TARGET_TOKENS),
    )

    import torch

    tfidf = make_encoder("tfidf")
    fit_seconds = timed(lambda: tfidf.fit(prompts))

    rows: list[tuple[str, float, float]] = []
    for label, encoder in (("tfidf", tfidf), ("minilm", minilm)):
        rows.append((f"{label} ({encoder.id})", *measure(encoder, batch, probe, args.repeats)))
    with tempfile.TemporaryDirectory() as cache_dir:
        cached_minilm = CachedEncoder(minilm, EmbeddingCache(cache_dir))
        cached_minilm.encode(batch + [probe], show_progress=False)
        rows.append(("minilm, all cache hits", *measure(cached_minilm, batch, probe, args.repeats)))

    print(
        f"data: {args.data} ({len(prompts)} prompts); batch of {len(batch)} real prompts, mean "
        f"{batch_tokens:.0f} MiniLM tokens (window 256, left truncation); probe: one "
        f"{probe_tokens}-token prompt from {args.probe_data.name}"
    )
    print(
        f"machine: {available_cpus()} CPUs (load average {os.getloadavg()[0]:.1f}), torch "
        f"{torch.__version__} with OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} and "
        f"{torch.get_num_threads()} threads; TF-IDF fit on all {len(prompts)} prompts: "
        f"{fit_seconds:.1f} s; MiniLM first call (imports + model load): {load_seconds:.1f} s"
    )
    _, tfidf_rate, tfidf_p50 = rows[0]
    header = f"{'encoder':<44} {'prompts/s':>10} {'p50 ms':>9} {'rate/tfidf':>11} {'p50/tfidf':>10}"
    print(header)
    print("-" * len(header))
    for label, rate, p50 in rows:
        print(
            f"{label:<44} {rate:>10.1f} {p50 * 1e3:>9.2f} {rate / tfidf_rate:>11.3g} "
            f"{p50 / tfidf_p50:>10.3g}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
