"""The model pool: the registry of routable models, their prices, and calibration of lambda.

Names are imported on first use, so that importing a light submodule (a grader, the answer
cache) does not pull in the routers and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uniroute.pool.calibration import CalibrationError, Policy, Target, calibrate
    from uniroute.pool.costs import ModelCost
    from uniroute.pool.registry import ModelRecord, Registry, RegistryError, read_scores_file

_EXPORTS = {
    "CalibrationError": "uniroute.pool.calibration",
    "Policy": "uniroute.pool.calibration",
    "Target": "uniroute.pool.calibration",
    "calibrate": "uniroute.pool.calibration",
    "ModelCost": "uniroute.pool.costs",
    "ModelRecord": "uniroute.pool.registry",
    "Registry": "uniroute.pool.registry",
    "RegistryError": "uniroute.pool.registry",
    "read_scores_file": "uniroute.pool.registry",
}

__all__ = [
    "CalibrationError",
    "ModelCost",
    "ModelRecord",
    "Policy",
    "Registry",
    "RegistryError",
    "Target",
    "calibrate",
    "read_scores_file",
]


def __getattr__(name: str) -> Any:
    """Import an exported name from its module on first access."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'uniroute.pool' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
