"""RouterBench in its published wide layout: ``routerbench_0shot.pkl`` or CSVs with its columns.

One row per prompt: ``sample_id, prompt, eval_name``, then for each model ``M`` the score column
``M``, ``M|model_response`` and ``M|total_cost`` (the real cost of that call in USD), plus
``oracle_model_to_route_to``. A CSV may start with an unnamed column holding the original
DataFrame index. Pickles execute code when read: only load pickles from a trusted source.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from uniroute.answers import answer_keys
from uniroute.data.dataset import RoutingDataset
from uniroute.data.long_format import parse_numbers, text_cells
from uniroute.errors import DataError

FIXED_COLUMNS = ("sample_id", "prompt", "eval_name")
COST_SUFFIX = "|total_cost"
RESPONSE_SUFFIX = "|model_response"
ROUTERBENCH_SUFFIXES = (".csv", ".pkl", ".pickle")
# Headers pandas and other tools give to a written-out DataFrame index.
INDEX_HEADERS = ("", "Unnamed: 0", "index")


def parse_prompt(raw: str) -> str:
    """Prompt text from RouterBench's stringified list of strings, parts joined by newlines.

    A value that is not a list literal of strings is returned unchanged.
    """
    stripped = raw.strip()
    if not (stripped.startswith("[") and stripped.endswith("]")):
        return raw
    try:
        parts = ast.literal_eval(stripped)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return raw
    if isinstance(parts, list) and all(isinstance(part, str) for part in parts):
        return "\n".join(parts)
    return raw


@dataclass
class _Rows:
    """The checked contents of one RouterBench file."""

    path: Path
    sample_ids: np.ndarray
    prompts: np.ndarray
    tasks: np.ndarray
    labels: list[str]
    row_names: list[str]
    models: list[str]
    scores: np.ndarray
    call_costs: np.ndarray
    responses: dict[str, np.ndarray]
    response_columns: frozenset[str]


def _read_frame(path: Path) -> tuple[pd.DataFrame, list[str] | None]:
    """The file as a DataFrame (text cells for CSV) and its original row labels, if recorded."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: empty file, expected a RouterBench header row") from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"{path}: not a readable CSV file ({exc})") from None
        labels = None
    elif suffix in (".pkl", ".pickle"):
        try:
            frame = pd.read_pickle(path)
        except Exception as exc:  # unpickling fails in arbitrary ways on a foreign or corrupt file
            raise DataError(f"{path}: not a readable pickled DataFrame ({exc})") from None
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"{path}: holds a {type(frame).__name__}, expected a pandas DataFrame")
        labels = [str(label) for label in frame.index]
    else:
        raise DataError(f"{path}: unknown RouterBench file type {path.suffix!r}; use .csv or .pkl")
    first = str(frame.columns[0]) if len(frame.columns) else None
    if first in INDEX_HEADERS:
        labels = [str(label) for label in frame.iloc[:, 0].tolist()]
        frame = frame.iloc[:, 1:]
    return frame.reset_index(drop=True), labels


def _model_columns(path: Path, columns: list[str]) -> list[str]:
    """The model names: columns ``M`` with a ``M|total_cost`` twin."""
    present = set(columns)
    missing = [c for c in FIXED_COLUMNS if c not in present]
    if missing:
        raise DataError(f"{path}: missing RouterBench column(s) {missing}")
    models = [c for c in columns if f"{c}{COST_SUFFIX}" in present]
    for column in columns:
        if column.endswith(COST_SUFFIX) and column[: -len(COST_SUFFIX)] not in present:
            score_column = column[: -len(COST_SUFFIX)]
            raise DataError(f"{path}: cost column {column!r} has no score column {score_column!r}")
    if not models:
        raise DataError(
            f"{path}: no model columns (a model M needs columns 'M' and 'M{COST_SUFFIX}')"
        )
    return models


def _model_cells(
    frame: pd.DataFrame, model: str, where: Callable[[int], str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One model's checked scores, call costs and parsed responses (None where empty)."""
    scores = parse_numbers(frame[model], where, model)
    bad = np.isinf(scores) | (scores < 0) | (scores > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where(i)}, model {model!r}: score {scores[i]} is outside [0, 1]")
    cost_column = f"{model}{COST_SUFFIX}"
    costs = parse_numbers(frame[cost_column], where, cost_column)
    bad = np.isinf(costs) | (costs < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where(i)}, column {cost_column!r}: {costs[i]} is not a finite cost >= 0")
    responses = np.full(len(frame), None, dtype=object)
    response_column = f"{model}{RESPONSE_SUFFIX}"
    if response_column in frame.columns:
        # Responses are stored like prompts: a stringified list of text parts.
        for i, response in enumerate(text_cells(frame[response_column])):
            if response is not None:
                responses[i] = parse_prompt(response)
    return scores, costs, responses


def _read_rows(path: Path) -> _Rows:
    """Read and check one RouterBench file."""
    frame, labels = _read_frame(path)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    models = _model_columns(path, columns)
    n = len(frame)

    def where(i: int) -> str:
        return f"{path}, row {i + 1}" + (f" (index {labels[i]})" if labels is not None else "")

    required: dict[str, np.ndarray] = {}
    for column in FIXED_COLUMNS:
        values = text_cells(frame[column])
        empty = [i for i, v in enumerate(values) if v is None]
        if empty:
            raise DataError(f"{where(empty[0])}, column {column!r}: empty cell")
        required[column] = values
    scores = np.full((n, len(models)), np.nan)
    call_costs = np.full((n, len(models)), np.nan)
    responses = {}
    for j, model in enumerate(models):
        scores[:, j], call_costs[:, j], responses[model] = _model_cells(frame, model, where)
    return _Rows(
        path=path,
        sample_ids=required["sample_id"],
        prompts=np.array([parse_prompt(p) for p in required["prompt"]], dtype=object),
        tasks=required["eval_name"],
        labels=labels if labels is not None else [f"{path.stem}:{i + 1}" for i in range(n)],
        row_names=[where(i) for i in range(n)],
        models=models,
        scores=scores,
        call_costs=call_costs,
        responses=responses,
        response_columns=frozenset(c for c in columns if c.endswith(RESPONSE_SUFFIX)),
    )


def _unique_prompt_ids(
    sample_ids: np.ndarray, prompts: np.ndarray, labels: list[str], row_names: list[str]
) -> np.ndarray:
    """sample_id, qualified by the original row label where RouterBench reuses a sample_id.

    The published table reuses a few sample_ids for different prompts; those rows become
    ``<sample_id>#<row label>``. The same sample_id with the same prompt twice is a duplicate row.
    """
    ids = np.array(sample_ids, dtype=object)
    repeated = pd.Series(ids).duplicated(keep=False).to_numpy()
    first_with_prompt: dict[tuple[str, str], int] = {}
    for i in np.flatnonzero(repeated):
        key = (ids[i], prompts[i])
        if key in first_with_prompt:
            raise DataError(
                f"{row_names[i]}: duplicate row for sample_id {ids[i]!r} with the same prompt "
                f"(first given at {row_names[first_with_prompt[key]]})"
            )
        first_with_prompt[key] = int(i)
    for i in np.flatnonzero(repeated):
        ids[i] = f"{sample_ids[i]}#{labels[i]}"
    clash = pd.Series(ids).duplicated(keep=False).to_numpy()
    if clash.any():
        i, j = np.flatnonzero(clash)[:2]
        raise DataError(
            f"{row_names[j]}: sample_id {sample_ids[j]!r} and row label {labels[j]!r} repeat "
            f"those at {row_names[i]}; RouterBench row labels must be unique"
        )
    return ids


def load_routerbench(
    path: str | Path | Sequence[str | Path],
    costs: Mapping[str, float] | None = None,
    name: str | None = None,
) -> RoutingDataset:
    """Read RouterBench file(s) (``.csv`` or pickled DataFrame ``.pkl``) into one RoutingDataset.

    Scores are the model columns, ``call_costs`` the ``M|total_cost`` columns (empty = NaN) and
    ``model_costs`` their per-model mean. Responses are kept in ``meta["responses"]``
    ({model: array of str or None, aligned to the prompts}); see ``responses_by_prompt``. When
    the files have ``M|model_response`` columns, ``answers`` holds each response's canonical key
    by its task's answer kind (``uniroute.answers.answer_kind_for_task``: ARC's letters; MBPP's
    code is not comparable, so None).
    Several files are merged row by row. ``costs``, when given, replaces the recorded costs.
    Only read pickles from a trusted source: unpickling can run arbitrary code.
    """
    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    if not paths:
        raise DataError("no RouterBench files given")
    parts = []
    for file_path in paths:
        if not file_path.is_file():
            raise DataError(f"{file_path}: no such file")
        parts.append(_read_rows(file_path))
    models: list[str] = []
    for part in parts:
        models += [m for m in part.models if m not in models]
    n = sum(len(part.sample_ids) for part in parts)
    scores = np.full((n, len(models)), np.nan)
    call_costs = np.full((n, len(models)), np.nan)
    responses = {m: np.full(n, None, dtype=object) for m in models}
    row = 0
    for part in parts:
        rows = slice(row, row + len(part.sample_ids))
        cols = [models.index(m) for m in part.models]
        scores[rows, cols] = part.scores
        call_costs[rows, cols] = part.call_costs
        for m in part.models:
            responses[m][rows] = part.responses[m]
        row += len(part.sample_ids)
    source = ", ".join(str(p) for p in paths)
    known = np.isfinite(call_costs)
    uncosted = [m for j, m in enumerate(models) if not known[:, j].any()]
    if uncosted and costs is None:
        raise DataError(
            f"{source}: model(s) {uncosted} have no recorded cost in any row; pass a cost map "
            "(--costs costs.json)"
        )
    counts = known.sum(axis=0)
    model_costs = np.where(known, call_costs, 0.0).sum(axis=0) / np.maximum(counts, 1)
    sample_ids = np.concatenate([part.sample_ids for part in parts])
    prompts = np.concatenate([part.prompts for part in parts])
    prompt_ids = _unique_prompt_ids(
        sample_ids,
        prompts,
        [label for part in parts for label in part.labels],
        [row_name for part in parts for row_name in part.row_names],
    )
    tasks = np.concatenate([part.tasks for part in parts])
    answers = None
    if any(f"{m}{RESPONSE_SUFFIX}" in part.response_columns for part in parts for m in models):
        answers = np.column_stack([answer_keys(responses[m], tasks, prompts) for m in models])
    dataset = RoutingDataset(
        prompt_ids=prompt_ids,
        prompts=prompts,
        tasks=tasks,
        models=models,
        model_costs=model_costs,
        scores=scores,
        call_costs=call_costs,
        answers=answers,
        name=name or ("routerbench" if len(paths) > 1 else paths[0].stem),
        source=source,
        meta={"responses": responses, "response_prompt_ids": prompt_ids.copy()},
    )
    if costs is not None:
        dataset = dataset.with_costs(costs, source=f"cost map for {source}")
    return dataset


def responses_by_prompt(dataset: RoutingDataset) -> dict[str, dict[str, str | None]]:
    """Recorded responses as {model: {prompt_id: response or None}} for the dataset's prompts.

    ``meta["responses"]`` holds one sequence per model (models without one are left out). The
    loader aligns them with ``meta["response_prompt_ids"]``, and ``RoutingDataset.subset``
    re-aligns both arrays with the kept rows, so they are read by id when that id array fits; a
    table without ids (or whose ids do not fit) is read by position against the dataset's rows.
    A table that fits both ways with different results (rows reordered but not the ids), a
    prompt with no recorded response, or no responses at all is a DataError.
    """
    responses = dataset.meta.get("responses")
    if not isinstance(responses, Mapping) or not responses:
        raise DataError(f"dataset {dataset.name!r} has no recorded model responses")
    recorded_ids = dataset.meta.get("response_prompt_ids")
    prompt_ids = [str(p) for p in dataset.prompt_ids]
    out: dict[str, dict[str, str | None]] = {}
    for model in dataset.models:
        column = responses.get(model)
        if column is None:
            continue
        by_position = len(column) == len(prompt_ids)
        # The recorded ids, when they fit this model's responses (read by id), else None.
        ids = None
        if recorded_ids is not None and len(recorded_ids) == len(column):
            ids = [str(p) for p in recorded_ids]
        if ids is not None and by_position and ids != prompt_ids:
            raise DataError(
                f"dataset {dataset.name!r}: the recorded responses of model {model!r} cannot be "
                "matched to its prompts unambiguously (reordered rows)"
            )
        if ids is not None:
            table = dict(zip(ids, column, strict=True))
            missing = [p for p in prompt_ids if p not in table]
            if missing:
                raise DataError(
                    f"dataset {dataset.name!r}: no recorded responses for prompt ids {missing[:5]}"
                )
            out[model] = {p: table[p] for p in prompt_ids}
        elif by_position:
            out[model] = dict(zip(prompt_ids, column, strict=True))
        else:
            raise DataError(
                f"dataset {dataset.name!r}: {len(column)} recorded responses for model {model!r}, "
                f"but {len(prompt_ids)} prompts"
            )
    return out
