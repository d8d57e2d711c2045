"""UniRoute: cost-aware routing of LLM requests that generalises to unseen LLMs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from uniroute.deployment.router import Router

__all__ = ["Router", "__version__"]


def __getattr__(name: str) -> Any:
    """Import the deployable ``Router`` on first use, so ``import uniroute`` stays light."""
    if name == "Router":
        from uniroute.deployment.router import Router

        return Router
    raise AttributeError(f"module 'uniroute' has no attribute {name!r}")
