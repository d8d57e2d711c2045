"""Representative prompts: the fixed validation set every model is described by."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from uniroute.data.jsonl import iter_jsonl_objects
from uniroute.errors import DataError


@dataclass(frozen=True)
class RepresentativePrompt:
    """One representative prompt: a new model answers it once to join the pool."""

    prompt_id: str
    text: str
    task: str
    reference: str | None = None


def write_representative_prompts(path: Path, prompts: Iterable[RepresentativePrompt]) -> None:
    """Write prompts as JSON Lines (one object per prompt) to an already-staged path."""
    with open(path, "w", encoding="utf-8") as handle:
        for prompt in prompts:
            handle.write(json.dumps(asdict(prompt), ensure_ascii=False) + "\n")


def read_representative_prompts(path: Path) -> list[RepresentativePrompt]:
    """Read prompts written by write_representative_prompts, naming the line of any bad record."""
    prompts = []
    for line_number, record in iter_jsonl_objects(path):
        try:
            prompts.append(
                RepresentativePrompt(
                    prompt_id=str(record["prompt_id"]),
                    text=str(record["text"]),
                    task=str(record["task"]),
                    reference=record.get("reference"),
                )
            )
        except KeyError as exc:
            raise DataError(
                f"{path}, line {line_number}: bad representative prompt (no {exc.args[0]!r} field)"
            ) from None
    return prompts
