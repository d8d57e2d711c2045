"""RouterDC evaluation logs (and the mmlupro27 set in the same layout).

Each file is a JSON list of ``{"question": str, "scores": {model: score in [0, 1]}}``, optionally
with ``"answers": {model: answer text or null}`` (mmlupro27: the parsed letter); other keys (such
as ``cluster_id``) are ignored. A model absent from ``scores`` was not recorded: NaN.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from uniroute.answers import answer_keys
from uniroute.data.dataset import RoutingDataset
from uniroute.data.jsonl import read_json_file
from uniroute.errors import DataError

# A trailing split marker in a file stem: "gsm8k-train", "mmlu_test", "arc_easy_val".
_SPLIT_MARKER = re.compile(r"[-_.](train|test|val|valid|validation|dev)$", re.IGNORECASE)


def task_from_stem(stem: str) -> str:
    """The task a file holds: its stem without a trailing train/test split marker."""
    task = _SPLIT_MARKER.sub("", stem)
    return task or stem


def _score_value(value: object, where: str) -> float:
    """A recorded score; null stands for a missing record."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"{where}: score {value!r} is not a number")
    score = float(value)
    if math.isnan(score):
        return score
    if not 0.0 <= score <= 1.0:
        raise DataError(f"{where}: score {score} is outside [0, 1]")
    return score


def load_routerdc(
    path: str | Path, costs: Mapping[str, float] | None = None, name: str | None = None
) -> RoutingDataset:
    """Read one RouterDC-style JSON file into a RoutingDataset.

    ``task`` is the file stem without its split marker and ``prompt_id`` is
    ``"<file stem>/<list index>"``. No costs are recorded: ``costs`` ({model: cost per query})
    defaults to 1.0 for every model; when given it must cover every model. Recorded
    ``answers`` become ``RoutingDataset.answers``, keyed by the task's answer kind.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    records = read_json_file(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise DataError(f"{path}: no records")

    models: list[str] = []
    column: dict[str, int] = {}
    rows: list[dict[int, float]] = []
    answer_rows: list[dict[int, str]] = []
    has_answers = False
    questions = []
    for index, record in enumerate(records):
        where = f"{path}, record {index + 1} (list index {index})"
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object, got {type(record).__name__}")
        question = record.get("question")
        if not isinstance(question, str):
            problem = (
                "missing" if question is None else f"of type {type(question).__name__}, not text"
            )
            raise DataError(f"{where}: 'question' is {problem}")
        scores = record.get("scores")
        if not isinstance(scores, dict):
            problem = (
                "missing" if scores is None else f"of type {type(scores).__name__}, not an object"
            )
            raise DataError(f"{where}: 'scores' is {problem}")
        row = {}
        for model, value in scores.items():
            if model not in column:
                column[model] = len(models)
                models.append(model)
            row[column[model]] = _score_value(value, f"{where}, model {model!r}")
        rows.append(row)
        questions.append(question)
        given = record.get("answers")
        answer_rows.append({})
        if given is None:
            continue
        if not isinstance(given, dict):
            raise DataError(f"{where}: 'answers' is of type {type(given).__name__}, not an object")
        has_answers = True
        for model, answer in given.items():
            if answer is None:
                continue
            if not isinstance(answer, str):
                raise DataError(f"{where}, model {model!r}: answer {answer!r} is not text or null")
            if model not in column:
                raise DataError(f"{where}: answer of model {model!r}, which has no score")
            answer_rows[-1][column[model]] = answer
    if not models:
        raise DataError(f"{path}: no record has any model score")

    score_matrix = np.full((len(rows), len(models)), np.nan)
    for i, row in enumerate(rows):
        for j, score in row.items():
            score_matrix[i, j] = score
    task = task_from_stem(path.stem)
    answers = None
    if has_answers:
        raw = np.full((len(rows), len(models)), None, dtype=object)
        for i, answer_row in enumerate(answer_rows):
            for j, answer in answer_row.items():
                raw[i, j] = answer
        tasks = [task] * len(rows)
        answers = np.column_stack(
            [answer_keys(raw[:, j], tasks, questions) for j in range(len(models))]
        )
    dataset = RoutingDataset(
        prompt_ids=np.array([f"{path.stem}/{i}" for i in range(len(rows))], dtype=object),
        prompts=np.array(questions, dtype=object),
        tasks=np.full(len(rows), task, dtype=object),
        models=models,
        model_costs=np.ones(len(models)),
        scores=score_matrix,
        answers=answers,
        name=name or path.stem,
        source=str(path),
    )
    if costs is not None:
        dataset = dataset.with_costs(costs, source=f"cost map for {path}")
    return dataset
