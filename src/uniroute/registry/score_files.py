"""Scores files a model is added from, and their alignment with the representative prompts.

A scores file is CSV (or TSV) with columns ``prompt_id`` and ``score``, or JSON Lines of
``{"prompt_id": ..., "score": ...}``; scores lie in [0, 1] and an empty one is missing. An
optional ``answer`` column (field) holds the model's raw answer to the prompt.
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

#: Longest answer accepted in a scores file (the registry keeps the first
#: ``MAX_RAW_ANSWER_CHARS`` of it); a longer cell is a mistake in the file, not an answer.
MAX_FILE_ANSWER_CHARS = 100_000


@dataclass(frozen=True)
class ScoresFile:
    """What a scores file holds: scores by prompt id and, where given, raw answers by prompt id."""

    scores: dict[str, float]
    answers: dict[str, str]


def read_scores_file(path: str | Path) -> dict[str, float]:
    """Read a model's scores from CSV (columns prompt_id, score) or JSON Lines ({prompt_id, score}).

    An empty score cell (or JSON null) is a missing score and is skipped; any other bad value raises
    DataError naming the file and the line (as an editor numbers it, the CSV header being line 1).
    """
    return read_model_file(path).scores


def read_model_file(path: str | Path) -> ScoresFile:
    """Read a model's scores and optional answers (column or field ``answer``) from a scores file.

    The answer is the model's raw answer text to the prompt (an empty cell or null: none given);
    in JSON Lines a number is taken as its text. A prompt may have an answer and no score. Bad
    values raise DataError naming the file, the line and the field.
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
    answers: dict[str, str] = {}
    seen: set[str] = set()
    for line_number, prompt_id, raw, answer in records:
        where = f"{path}, line {line_number}"
        if prompt_id is None or str(prompt_id).strip() == "":
            raise DataError(f"{where}: empty prompt_id")
        prompt_id = str(prompt_id).strip()
        if prompt_id in seen:
            raise DataError(f"{where}: prompt_id {prompt_id!r} appears twice")
        seen.add(prompt_id)
        text = _answer_text(answer, where)
        if text is not None:
            answers[prompt_id] = text
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
    return ScoresFile(scores, answers)


def _answer_text(value: Any, where: str) -> str | None:
    """The answer of one row as text (None: no answer given); refuses other kinds of value."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataError(
            f"{where}: answer must be text (or a number, or null), got {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{where}: answer {value!r} is not a finite number")
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        raise DataError(f"{where}: answer holds a NUL character")
    if len(text) > MAX_FILE_ANSWER_CHARS:
        raise DataError(f"{where}: answer is {len(text)} characters, over {MAX_FILE_ANSWER_CHARS}")
    return text


def _scores_csv(path: Path, delimiter: str) -> Iterator[tuple[int, Any, Any, Any]]:
    """(line number, prompt_id, score cell, answer cell or None) per data row.

    A row cut short before its prompt_id, score (or, when the header has one, answer) column is
    an error, not a missing value.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            columns = reader.fieldnames or []
            missing = [c for c in ("prompt_id", "score") if c not in columns]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {missing}; the header must name prompt_id and score"
                )
            with_answers = "answer" in columns
            for row in reader:
                # DictReader fills the cells of a row cut short with None (an empty cell is "").
                if row["prompt_id"] is None or row["score"] is None:
                    raise DataError(
                        f"{path}, line {reader.line_num}: the row ends before its prompt_id and "
                        "score columns"
                    )
                if with_answers and row["answer"] is None:
                    raise DataError(
                        f"{path}, line {reader.line_num}: the row ends before its answer column"
                    )
                answer = row["answer"] if with_answers else None
                yield reader.line_num, row["prompt_id"], row["score"], answer
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not readable as CSV ({exc})") from None


def _scores_jsonl(path: Path) -> Iterator[tuple[int, Any, Any, Any]]:
    """(line number, prompt_id, score, answer or None) per object of a JSON Lines file."""
    for line_number, record in iter_jsonl_objects(path):
        if "prompt_id" not in record or "score" not in record:
            raise DataError(
                f"{path}, line {line_number}: expected an object with prompt_id and score"
            )
        yield line_number, record["prompt_id"], record["score"], record.get("answer")


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
