"""The model registry: stored model records, their scores and prices, and the default policy.

Import from here: ``Registry`` (``store``), records and their field checks (``records``), the
file's schema and migrations (``schema``), scores files (``score_files``) and prices (``costs``).
"""

from __future__ import annotations

from uniroute.registry.costs import (
    CHARS_PER_TOKEN,
    DEFAULT_OUTPUT_TOKENS,
    ModelCost,
    estimate_tokens,
    mean_input_tokens,
)
from uniroute.registry.keys import (
    ClientKey,
    CreatedKey,
    KeyStore,
    Reservation,
    UsageRow,
)
from uniroute.registry.records import (
    MAX_ANSWER_KEY_CHARS,
    MAX_RAW_ANSWER_CHARS,
    Binding,
    ModelAnswer,
    ModelRecord,
    NewModel,
    check_api_key_env,
    check_model_name,
    check_upstream_model,
    looks_like_secret,
    pool_fingerprint,
    prompts_fingerprint,
)
from uniroute.registry.schema import MIGRATIONS, REGISTRY_SCHEMA_VERSION, Migration, migrate
from uniroute.registry.score_files import (
    AlignedScores,
    ScoresFile,
    align_scores,
    read_model_file,
    read_scores_file,
)
from uniroute.registry.store import Registry

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_OUTPUT_TOKENS",
    "MAX_ANSWER_KEY_CHARS",
    "MAX_RAW_ANSWER_CHARS",
    "MIGRATIONS",
    "REGISTRY_SCHEMA_VERSION",
    "AlignedScores",
    "Binding",
    "ClientKey",
    "CreatedKey",
    "KeyStore",
    "Migration",
    "ModelAnswer",
    "ModelCost",
    "ModelRecord",
    "NewModel",
    "Registry",
    "Reservation",
    "ScoresFile",
    "UsageRow",
    "align_scores",
    "check_api_key_env",
    "check_model_name",
    "check_upstream_model",
    "estimate_tokens",
    "looks_like_secret",
    "mean_input_tokens",
    "migrate",
    "pool_fingerprint",
    "prompts_fingerprint",
    "read_model_file",
    "read_scores_file",
]
