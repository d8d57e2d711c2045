"""Routing data: the RoutingDataset type, loaders for published formats, and seeded splits."""

from __future__ import annotations

import importlib
from typing import Any

from uniroute.data.dataset import RoutingDataset
from uniroute.data.paths import default_cache_dir, default_data_dir
from uniroute.data.splits import PromptSplit, split_models, split_prompts
from uniroute.errors import DataError

# The loaders import pandas; they load on first use so that `import uniroute.data` stays light.
_LAZY = {
    "FORMATS": "uniroute.data.loading",
    "load_dataset": "uniroute.data.loading",
    "load_cost_map": "uniroute.data.loading",
    "load_routerbench": "uniroute.data.routerbench",
    "responses_by_prompt": "uniroute.data.routerbench",
    "load_routerdc": "uniroute.data.routerdc",
    "load_embedllm": "uniroute.data.embedllm",
    "load_long_format": "uniroute.data.long_format",
    "write_long_format": "uniroute.data.long_format",
}

__all__ = [
    "DataError",
    "PromptSplit",
    "RoutingDataset",
    "default_cache_dir",
    "default_data_dir",
    "split_models",
    "split_prompts",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Import a loader's module when one of its names is first used."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
