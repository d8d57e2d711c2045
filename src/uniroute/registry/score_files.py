"""Scores files a model is added from, and their alignment with the representative prompts.

A scores file is CSV (or TSV) with columns ``prompt_id`` and ``score``, or JSON Lines of
``{"prompt_id": ..., "score": ...}``; scores lie in [0, 1] and an empty one is missing.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uniroute.data.jsonl import iter_jsonl_objects
from uniroute.errors import DataError


def read_scores_file(path: str | Path) -> dict[str, float]:
    """Read a model's scores from CSV (columns prompt_id, score) or JSON Lines ({prompt_id, score}).

    An empty score cell (or JSON null) is a missing score and is skipped; any other bad value raises
    DataError naming the file and the line (as an editor numbers it, the CSV header being line 1).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a scores file (.csv or .jsonl)")
    if not path.is_file():
        raise DataError(f"{path}: scores file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        records = _scores_jsonl(path)
    elif suffix in (".csv", ".tsv"):
        records = _scores_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    else:
        raise DataError(f"{path}: unknown scores file type {suffix!r}; use .csv or .jsonl")
    scores: dict[str, float] = {}
    for line_number, prompt_id, raw in records:
        where = f"{path}, line {line_number}"
        if prompt_id is None or str(prompt_id).strip() == "":
            raise DataError(f"{where}: empty prompt_id")
        prompt_id = str(prompt_id).strip()
        if prompt_id in scores:
            raise DataError(f"{where}: prompt_id {prompt_id!r} appears twice")
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise DataError(f"{where}: score {raw!r} is not a number") from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise DataError(f"{where}: score {raw!r} is outside [0, 1]")
        scores[prompt_id] = value
    if not scores:
        raise DataError(f"{path}: no scores found")
    return scores


def _scores_csv(path: Path, delimiter: str) -> Iterator[tuple[int, Any, Any]]:
    """(line number, prompt_id, score cell) per data row; a short row is an error, not missing."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            columns = reader.fieldnames or []
            missing = [c for c in ("prompt_id", "score") if c not in columns]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {missing}; the header must name prompt_id and score"
                )
            for row in reader:
                # DictReader fills the cells of a row cut short with None (an empty cell is "").
                if row["prompt_id"] is None or row["score"] is None:
                    raise DataError(
                        f"{path}, line {reader.line_num}: the row ends before its prompt_id and "
                        "score columns"
                    )
                yield reader.line_num, row["prompt_id"], row["score"]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not readable as CSV ({exc})") from None


def _scores_jsonl(path: Path) -> Iterator[tuple[int, Any, Any]]:
    """(line number, prompt_id, score) per object of a JSON Lines file."""
    for line_number, record in iter_jsonl_objects(path):
        if "prompt_id" not in record or "score" not in record:
            raise DataError(
                f"{path}, line {line_number}: expected an object with prompt_id and score"
            )
        yield line_number, record["prompt_id"], record["score"]


@dataclass(frozen=True)
class AlignedScores:
    """Scores aligned to the representative prompts, and the ids that matched none."""

    values: np.ndarray
    unknown_ids: list[str]
    n_matched: int


def align_scores(
    scores: Mapping[str, float], prompt_ids: Sequence[str], source: str
) -> AlignedScores:
    """Place scores in representative-prompt order (NaN where absent); error if none matches."""
    row_of = {str(p): i for i, p in enumerate(prompt_ids)}
    values = np.full(len(prompt_ids), np.nan)
    unknown = []
    for prompt_id, score in scores.items():
        i = row_of.get(str(prompt_id))
        if i is None:
            unknown.append(str(prompt_id))
        else:
            values[i] = score
    matched = len(scores) - len(unknown)
    if matched == 0:
        raise DataError(
            f"{source}: none of its {len(scores)} prompt ids is a representative prompt of the "
            f"artifact (first ids: {list(scores)[:3]}; expected ids such as {list(prompt_ids)[:3]})"
        )
    return AlignedScores(values=values, unknown_ids=unknown, n_matched=matched)
