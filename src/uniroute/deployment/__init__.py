"""The deployed router: an artifact plus the registry's pool, and the changes made to that pool."""

from uniroute.deployment.router import AddedModel, Decision, Router, seed_registry

__all__ = ["AddedModel", "Decision", "Router", "seed_registry"]
