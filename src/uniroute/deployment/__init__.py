"""The deployed router: an artifact over the registry's pool, and the changes made to that pool."""

from uniroute.deployment.decision import Decision
from uniroute.deployment.router import Router
from uniroute.deployment.snapshot import Snapshot
from uniroute.deployment.verify import VerifyPlan

__all__ = ["Decision", "Router", "Snapshot", "VerifyPlan"]
