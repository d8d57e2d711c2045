"""The EmbedLLM correctness data set (Hugging Face ``RZ412/EmbedLLM``), read from its folder.

Published layout (see docs/DATA.md): ``train.csv``, ``val.csv``, ``test.csv`` with one row per
(prompt, model) call and columns ``prompt_id, model_id, category_id, label, model_name,
category, prompt`` (only ``model_id, prompt_id, label`` are required here);
``question_order.csv`` (``prompt_id, prompt``, optionally ``category``); ``model_order.csv``
(``model_id, model_name``). All data files are merged into one matrix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from uniroute.data.dataset import RoutingDataset
from uniroute.data.long_format import DEFAULT_TASK, parse_numbers
from uniroute.errors import DataError

QUESTION_TABLE = "question_order.csv"
MODEL_TABLE = "model_order.csv"
DATA_COLUMNS = ("model_id", "prompt_id", "label")
_TEXT_COLUMNS = ("model_id", "prompt_id", "model_name", "category", "prompt")


def _read_csv(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A CSV with identifier and text columns kept as text exactly as written."""
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
        wanted = header if columns is None else [c for c in header if c in columns]
        return pd.read_csv(
            path,
            usecols=wanted,
            dtype={c: str for c in wanted if c in _TEXT_COLUMNS},
            keep_default_na=False,
            na_values={"label": [""]},
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file, expected a header row") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None


def _require_columns(path: Path, frame: pd.DataFrame, required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; found {[str(c) for c in frame.columns]}"
        )


def _first_empty(path: Path, frame: pd.DataFrame, column: str) -> None:
    empty = (frame[column] == "").to_numpy()
    if empty.any():
        raise DataError(f"{path}, row {int(np.flatnonzero(empty)[0]) + 1}: empty {column!r}")


def _first_repeat(path: Path, frame: pd.DataFrame, column: str) -> None:
    repeated = frame[column].duplicated(keep="first").to_numpy()
    if repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        j = int(np.flatnonzero((frame[column] == frame[column].iloc[i]).to_numpy())[0])
        raise DataError(
            f"{path}, row {i + 1}: {column} {frame[column].iloc[i]!r} repeats row {j + 1}"
        )


def _read_question_table(path: Path) -> pd.DataFrame:
    frame = _read_csv(path, ["prompt_id", "prompt", "category"])
    _require_columns(path, frame, ("prompt_id", "prompt"))
    _first_empty(path, frame, "prompt_id")
    _first_empty(path, frame, "prompt")
    _first_repeat(path, frame, "prompt_id")
    return frame


def _read_model_table(path: Path) -> pd.DataFrame:
    frame = _read_csv(path, ["model_id", "model_name"])
    _require_columns(path, frame, ("model_id", "model_name"))
    for column in ("model_id", "model_name"):
        _first_empty(path, frame, column)
        _first_repeat(path, frame, column)
    return frame


class _Rows:
    """All data rows, with the file and 1-based row each came from."""

    def __init__(self, files: list[Path], frames: list[pd.DataFrame]) -> None:
        self.files = files
        self.starts = np.cumsum([0] + [len(f) for f in frames])
        self.frame = pd.concat(frames, ignore_index=True)

    def where(self, i: int) -> str:
        """File and user-counted row of merged position ``i``."""
        f = int(np.searchsorted(self.starts, i, side="right")) - 1
        return f"{self.files[f]}, row {i - int(self.starts[f]) + 1}"


def _data_files(path: Path) -> tuple[Path, list[Path]]:
    if path.is_dir():
        tables = {QUESTION_TABLE, MODEL_TABLE}
        files = sorted(
            p for p in path.glob("*.csv") if p.name not in tables and not p.name.startswith(".")
        )
        if not files:
            raise DataError(f"{path}: no EmbedLLM data files (train.csv, val.csv, test.csv)")
        return path, files
    if path.is_file():
        return path.parent, [path]
    raise DataError(f"{path}: no such file or folder")


def _one_value_per_id(rows: _Rows, id_column: str, column: str) -> pd.Series:
    """The value of ``column`` for each id; an id given two different values is an error."""
    ids, values = rows.frame[id_column], rows.frame[column]
    first_value = values.groupby(ids, sort=False).transform("first")
    differs = (values != first_value).to_numpy()
    if differs.any():
        j = int(np.flatnonzero(differs)[0])
        i = int(np.flatnonzero((ids == ids.iloc[j]).to_numpy())[0])
        raise DataError(
            f"{rows.where(j)}: {id_column} {ids.iloc[j]!r} has a different {column!r} than at "
            f"{rows.where(i)}"
        )
    return values.groupby(ids, sort=False).first()


def _labelled_table_rows(
    table_ids: pd.Series,
    rows: _Rows,
    id_column: str,
    codes: np.ndarray,
    distinct_ids: pd.Index,
    table_path: Path,
) -> np.ndarray:
    """Which entries of an id table the data rows label; an id absent from it is a DataError.

    ``codes`` / ``distinct_ids`` are ``pd.factorize`` of the data rows' ``id_column``.
    """
    known = pd.Index(table_ids)
    unknown = (known.get_indexer(distinct_ids) < 0)[codes]
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise DataError(
            f"{rows.where(i)}: {id_column} {rows.frame[id_column].iloc[i]!r} is not in {table_path}"
        )
    return known.isin(distinct_ids)


def load_embedllm(
    path: str | Path,
    costs: Mapping[str, float] | None = None,
    name: str | None = None,
    on_conflict: Literal["error", "missing"] = "error",
) -> RoutingDataset:
    """Read the EmbedLLM folder (every data CSV merged) into a RoutingDataset.

    Prompt texts come from ``question_order.csv`` (else a ``prompt`` column of the data files),
    model names from ``model_order.csv`` (else a ``model_name`` column, else ``model_<id>``),
    tasks from a ``category`` column (else ``"default"``). No costs are published: ``costs``
    ({model name: cost per query}) defaults to 1.0 for every model. A (model, prompt) pair given
    twice with different labels is a DataError; ``on_conflict="missing"`` records it as NaN
    instead (the count is kept in ``meta["conflicting_pairs"]``).
    """
    if on_conflict not in ("error", "missing"):
        raise ValueError(f"on_conflict must be 'error' or 'missing', got {on_conflict!r}")
    folder, files = _data_files(Path(path))
    question_path, model_path = folder / QUESTION_TABLE, folder / MODEL_TABLE
    questions = _read_question_table(question_path) if question_path.is_file() else None
    model_table = _read_model_table(model_path) if model_path.is_file() else None

    wanted = [*DATA_COLUMNS, "category", "model_name"]
    if questions is None:
        wanted.append("prompt")
    frames = []
    for file_path in files:
        frame = _read_csv(file_path, wanted)
        _require_columns(file_path, frame, DATA_COLUMNS)
        if questions is None and "prompt" not in frame.columns:
            raise DataError(
                f"{file_path}: no 'prompt' column and no {QUESTION_TABLE} in {folder}; "
                "the prompt texts are needed"
            )
        for column in ("model_id", "prompt_id"):
            _first_empty(file_path, frame, column)
        frames.append(frame)
    rows = _Rows(files, frames)
    data = rows.frame
    if len(data) == 0:
        raise DataError(f"{folder}: the data files hold no rows")
    labels = parse_numbers(data["label"], rows.where, "label")
    bad = ~np.isfinite(labels) | (labels < 0) | (labels > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        problem = "empty cell" if np.isnan(labels[i]) else f"{labels[i]} is outside [0, 1]"
        raise DataError(f"{rows.where(i)}, column 'label': {problem}")
    prompt_ids, model_ids = data["prompt_id"], data["model_id"]
    # Millions of rows but few distinct ids: look ids up once each, then map by code.
    prompt_codes, distinct_prompts = pd.factorize(prompt_ids, sort=False)
    model_codes, distinct_models = pd.factorize(model_ids, sort=False)

    # Prompts: question-table order, keeping those with at least one label.
    if questions is not None:
        seen = _labelled_table_rows(
            questions["prompt_id"], rows, "prompt_id", prompt_codes, distinct_prompts, question_path
        )
        prompt_index = pd.Index(questions["prompt_id"][seen])
        prompt_texts = questions["prompt"][seen].to_numpy(dtype=object)
        table_tasks = questions["category"][seen] if "category" in questions.columns else None
    else:
        prompt_index = pd.Index(distinct_prompts)
        prompt_texts = _one_value_per_id(rows, "prompt_id", "prompt")[prompt_index]
        prompt_texts = prompt_texts.to_numpy(dtype=object)
        table_tasks = None
    if table_tasks is not None:
        tasks = table_tasks.replace("", DEFAULT_TASK).to_numpy(dtype=object)
    elif "category" in data.columns:
        tasks = _categories(prompt_ids, data["category"])[prompt_index].to_numpy(dtype=object)
    else:
        tasks = np.full(len(prompt_index), DEFAULT_TASK, dtype=object)

    # Models: model-table order, keeping those with at least one label.
    if model_table is not None:
        seen = _labelled_table_rows(
            model_table["model_id"], rows, "model_id", model_codes, distinct_models, model_path
        )
        model_index = pd.Index(model_table["model_id"][seen])
        model_names = model_table["model_name"][seen].tolist()
    else:
        model_index = pd.Index(distinct_models)
        if "model_name" in data.columns:
            model_names = _one_value_per_id(rows, "model_id", "model_name")[model_index].tolist()
        else:
            model_names = [f"model_{model_id}" for model_id in model_index]

    row_of = prompt_index.get_indexer(distinct_prompts)[prompt_codes]
    col_of = model_index.get_indexer(distinct_models)[model_codes]
    scores, conflicts = _fill_scores(
        rows, (len(prompt_index), len(model_names)), row_of, col_of, labels, on_conflict
    )
    meta = {"conflicting_pairs": conflicts} if on_conflict == "missing" else {}
    dataset = RoutingDataset(
        prompt_ids=np.asarray(prompt_index, dtype=object),
        prompts=prompt_texts,
        tasks=tasks,
        models=model_names,
        model_costs=np.ones(len(model_names)),
        scores=scores,
        name=name or "embedllm",
        source=str(folder),
        meta=meta,
    )
    if costs is not None:
        dataset = dataset.with_costs(costs, source=f"cost map for {folder}")
    return dataset


def _categories(prompt_ids: pd.Series, categories: pd.Series) -> pd.Series:
    """Category per prompt id; one listed under several keeps them all, sorted, joined by "|"."""
    pairs = pd.DataFrame({"prompt_id": prompt_ids, "category": categories}).drop_duplicates()
    pairs = pairs[pairs["category"] != ""]
    several = pairs["prompt_id"].duplicated(keep=False)
    single = pairs[~several].set_index("prompt_id")["category"]
    joined = pairs[several].groupby("prompt_id")["category"].agg(lambda v: "|".join(sorted(v)))
    combined = pd.concat([single, joined])
    missing = pd.Index(prompt_ids.unique()).difference(combined.index)
    return pd.concat([combined, pd.Series(DEFAULT_TASK, index=missing, dtype=object)])


def _fill_scores(
    rows: _Rows,
    shape: tuple[int, int],
    row_of: np.ndarray,
    col_of: np.ndarray,
    labels: np.ndarray,
    on_conflict: str,
) -> tuple[np.ndarray, int]:
    """The score matrix; repeated pairs must agree (else error, or NaN when asked)."""
    n_models = shape[1]
    key = row_of.astype(np.int64) * n_models + col_of
    scores = np.full(shape, np.nan)
    if np.bincount(key, minlength=shape[0] * n_models).max() <= 1:
        scores[row_of, col_of] = labels
        return scores, 0
    order = np.argsort(key, kind="stable")
    sorted_key, sorted_labels = key[order], labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    lowest = np.minimum.reduceat(sorted_labels, starts)
    highest = np.maximum.reduceat(sorted_labels, starts)
    conflicting = lowest != highest
    if conflicting.any() and on_conflict == "error":
        g = int(np.flatnonzero(conflicting)[0])
        end = starts[g + 1] if g + 1 < len(starts) else len(order)
        members = order[starts[g] : end]
        first = int(members[0])
        other = int(next(i for i in members if labels[i] != labels[first]))
        model_id = rows.frame["model_id"].iloc[other]
        raise DataError(
            f"{rows.where(other)}: model_id {model_id!r} on prompt_id "
            f"{rows.frame['prompt_id'].iloc[other]!r} has label {labels[other]:g}, but "
            f"{labels[first]:g} at {rows.where(first)}; pass on_conflict='missing' to record "
            "such pairs as missing"
        )
    values = np.where(conflicting, np.nan, lowest)
    unique_key = sorted_key[starts]
    scores[unique_key // n_models, unique_key % n_models] = values
    return scores, int(conflicting.sum())
