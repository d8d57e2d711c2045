"""One entry point for every supported format, and cost maps ({model: cost per query} JSON)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from uniroute.data.dataset import RoutingDataset
from uniroute.data.jsonl import read_json_file
from uniroute.errors import DataError

FORMATS = ("routerbench", "routerdc", "embedllm", "long")

# Files of a folder that hold data, by format; anything else in the folder is ignored.
_DATA_SUFFIXES = {
    "routerbench": (".csv", ".pkl", ".pickle"),
    "routerdc": (".json",),
    "long": (".csv", ".jsonl", ".ndjson", ".parquet"),
}


def load_cost_map(path: str | Path) -> dict[str, float]:
    """Read a JSON object {model name: cost per query}; every cost a finite number >= 0."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: cost map not found")
    return check_cost_map(read_json_file(path), str(path))


def check_cost_map(raw: object, source: str = "cost map") -> dict[str, float]:
    """Validate a {model: cost} mapping and return it with float values."""
    if not isinstance(raw, Mapping):
        raise DataError(
            f"{source}: expected a JSON object {{model name: cost}}, got {type(raw).__name__}"
        )
    costs = {}
    for model, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DataError(f"{source}: cost of model {model!r} is not a number: {value!r}")
        cost = float(value)
        if not math.isfinite(cost) or cost < 0:
            raise DataError(
                f"{source}: cost of model {model!r} must be a finite number >= 0, got {value!r}"
            )
        costs[str(model)] = cost
    if not costs:
        raise DataError(f"{source}: the cost map is empty")
    return costs


def _data_files(folder: Path, format: str) -> list[Path]:
    suffixes = _DATA_SUFFIXES[format]
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
    )
    if not files:
        raise DataError(f"{folder}: no {format} data files (looked for {', '.join(suffixes)})")
    return files


def load_dataset(
    path: str | Path,
    format: str,
    costs: Mapping[str, float] | str | Path | None = None,
) -> RoutingDataset:
    """Load a file or a folder of files in one of ``FORMATS`` into a single RoutingDataset.

    A folder's data files are all read, in name order, and merged: RouterDC files with
    ``RoutingDataset.concat`` (their prompt ids carry the file stem); RouterBench and long-format
    files row by row, so one prompt's models may be split over files. For ``embedllm`` the path
    is the folder. ``costs`` ({model: cost} or the path of a JSON cost map), when given,
    replaces every per-query cost and must cover every model.
    """
    if format not in FORMATS:
        raise DataError(f"unknown data format {format!r}; choose one of {list(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if costs is not None and not isinstance(costs, Mapping):
        cost_map = load_cost_map(costs)
    elif costs is not None:
        cost_map = check_cost_map(costs)
    else:
        cost_map = None

    if format == "embedllm":
        from uniroute.data.embedllm import load_embedllm

        return load_embedllm(path, costs=cost_map)
    files = _data_files(path, format) if path.is_dir() else [path]
    name = path.name if path.is_dir() else path.stem
    if format == "routerbench":
        from uniroute.data.routerbench import load_routerbench

        return load_routerbench(files, costs=cost_map, name=name)
    if format == "long":
        from uniroute.data.long_format import load_long_format

        return load_long_format(files, costs=cost_map, name=name)
    from uniroute.data.routerdc import load_routerdc

    parts = [load_routerdc(file, costs=cost_map) for file in files]
    merged = parts[0] if len(parts) == 1 else RoutingDataset.concat(parts, name=name)
    if cost_map is None:
        return merged
    # concat averages per-file costs; re-applying the map keeps the user's exact values.
    return merged.with_costs(cost_map, source=f"cost map for {path}")
