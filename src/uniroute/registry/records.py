"""What the registry stores about a model, and the checks every stored field passes.

A ``ModelRecord`` validates itself when built (so a record read back from the file is checked
like one given by a caller); ``NewModel`` adds the scores, Psi and answers to store with it
(``ModelAnswer``: a canonical answer key and the raw answer text, bounded). Endpoints are
checked by the one rule in ``uniroute.onboarding.endpoints``. A record read back whose endpoint
or ``api_key_env`` today's rules refuse (an older version stored it) still loads, marked with its
``problem`` and never served, so that one such row cannot stop the whole pool from loading.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uniroute.errors import RegistryError
from uniroute.onboarding.endpoints import check_endpoint, masked_endpoint
from uniroute.registry.costs import ModelCost

# ---------------------------------------------------------------------------- field validation
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_ENV_NAME_LENGTH = 128
#: Prefixes of API keys and tokens (OpenAI, Stripe, GitHub, GitLab, Slack, Hugging Face, Groq,
#: Replicate, Google, npm, Stripe webhooks, JWTs, ...), matched case-sensitively.
_SECRET_PREFIXES = (
    "sk-",
    "sk_",
    "rk_",
    "pk_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xox",
    "hf_",
    "gsk_",
    "r8_",
    "npm_",
    "whsec_",
    "AIza",
    "ya29.",
    "eyJ",
)
#: A prefixed value this long is a key; a shorter one may be a variable such as ``hf_token``.
_PREFIXED_KEY_LENGTH = 16
#: AWS access key ids: a four-letter kind then 16 upper-case letters and digits.
_AWS_KEY_ID = re.compile(r"^(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}$")


def secret_shape(value: str) -> str | None:
    """Why a string looks like an API key rather than a variable name (None: it does not).

    The reason never repeats the value, which may be a real key.
    """
    for prefix in _SECRET_PREFIXES:
        if value.startswith(prefix) and len(value) >= _PREFIXED_KEY_LENGTH:
            return f"it starts with {prefix!r}, the prefix of a known kind of key"
    if _AWS_KEY_ID.match(value):
        return "it has the shape of an AWS access key id"
    if not _ENV_NAME.match(value):
        return (
            "it holds characters a variable name cannot (a name is letters, digits and '_', "
            "not starting with a digit)"
        )
    if len(value) > _MAX_ENV_NAME_LENGTH:
        return f"it is longer than {_MAX_ENV_NAME_LENGTH} characters"
    # Variable names are short words joined by underscores; keys are long random runs.
    for part in value.split("_"):
        letters = any(c.isalpha() for c in part)
        digits = any(c.isdigit() for c in part)
        mixed_case = any(c.islower() for c in part) and any(c.isupper() for c in part)
        if (
            len(part) >= 24
            or (len(part) >= 16 and letters and digits)
            or (len(part) >= 12 and mixed_case and digits)
        ):
            return f"it holds a run of {len(part)} random-looking characters without an '_'"
    has_digit = any(c.isdigit() for c in value)
    if len(value) >= 20 and has_digit and not (value.isupper() or value.islower()):
        return "it mixes upper and lower case letters with digits, as keys do"
    return None


def looks_like_secret(value: str) -> bool:
    """True when a string looks like an API key or token rather than a variable name."""
    return secret_shape(value) is not None


def _api_key_env_refusal(reason: str) -> str:
    return (
        "api_key_env must be the NAME of the environment variable that holds the API key "
        f"(e.g. OPENAI_API_KEY), not the key itself; the value given looks like a key ({reason}) "
        "and was not stored"
    )


def check_api_key_env(value: str | None) -> str | None:
    """Validate the name of the environment variable holding a model's API key."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise RegistryError("api_key_env must be a non-empty environment variable name")
    reason = secret_shape(value)
    if reason is not None:
        raise RegistryError(_api_key_env_refusal(reason))
    return value


def check_model_name(name: str, label: str = "model name") -> str:
    """Validate a model name (non-empty, printable, no surrounding whitespace)."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise RegistryError(
            f"{label} must be a non-empty string without surrounding spaces: {name!r}"
        )
    if len(name) > 200 or not name.isprintable():
        raise RegistryError(f"{label} must be printable and at most 200 characters: {name!r}")
    return name


def check_upstream_model(value: str | None, endpoint: str | None, name: str) -> str | None:
    """Validate the model name sent to a model's endpoint (it needs an endpoint to be sent to)."""
    if value is None:
        return None
    check_model_name(value, f"model {name!r}: upstream model name")
    if endpoint is None:
        raise RegistryError(
            f"model {name!r}: an upstream model name ({value!r}) is the name sent to the "
            "model's endpoint; give the endpoint too"
        )
    return value


def check_scores(name: str, scores: Mapping[str, float]) -> list[tuple[str, str, float]]:
    """A model's scores as (model, prompt_id, score) rows; NaN (missing) scores get no row."""
    rows = []
    for prompt_id, score in scores.items():
        try:
            value = float(score)
        except (TypeError, ValueError):
            raise RegistryError(
                f"model {name!r}: score for prompt {prompt_id!r} is not a number: {score!r}"
            ) from None
        if math.isnan(value):
            continue  # missing: stored as no row
        if not 0.0 <= value <= 1.0:
            raise RegistryError(
                f"model {name!r}: score {value} for prompt {prompt_id!r} is outside [0, 1]"
            )
        rows.append((name, str(prompt_id), value))
    if not rows:
        raise RegistryError(f"model {name!r}: no score on any representative prompt")
    return rows


#: Longest raw answer text kept per (model, prompt): longer answers are stored cut to this
#: length, with their full length, so an audit sees what the model said and that it was cut.
#: What a model can be declared (or probed) to do beyond plain text: call tools, read images,
#: answer in JSON mode / to a JSON schema (``response_format``).
CAPABILITIES = ("tools", "vision", "json")
#: The largest context window or output length a record accepts (tokens).
MAX_TOKEN_LIMIT = 100_000_000


def check_capabilities(name: str, capabilities: Any) -> tuple[str, ...]:
    """A model's capabilities as a sorted tuple of known names; a RegistryError naming an
    unknown one."""
    if isinstance(capabilities, str) or not isinstance(capabilities, Iterable):
        raise RegistryError(
            f"model {name!r}: capabilities must be a list of names, got {capabilities!r}"
        )
    found = set()
    for capability in capabilities:
        if capability not in CAPABILITIES:
            raise RegistryError(
                f"model {name!r}: unknown capability {capability!r}; known: "
                f"{', '.join(CAPABILITIES)}"
            )
        found.add(capability)
    return tuple(sorted(found))


def check_token_limit(name: str, field_name: str, value: Any) -> int | None:
    """A context window or maximum output length: None (unknown) or a whole number of tokens
    in [1, MAX_TOKEN_LIMIT]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKEN_LIMIT:
        raise RegistryError(
            f"model {name!r}: {field_name} must be a whole number of tokens from 1 to "
            f"{MAX_TOKEN_LIMIT:,}, got {value!r}"
        )
    return value


MAX_RAW_ANSWER_CHARS = 4000
#: Longest canonical answer key stored (a letter, a number, a normalised short text).
MAX_ANSWER_KEY_CHARS = 1000


@dataclass(frozen=True)
class ModelAnswer:
    """A model's answer to one representative prompt: its canonical key and its raw text.

    ``key`` is what agreement is decided on (an option letter, a number, normalised text; None
    when the answer held nothing comparable), ``raw`` the answer as given, cut to
    ``MAX_RAW_ANSWER_CHARS`` (None when not kept) and ``raw_chars`` its length before cutting.
    """

    key: str | None
    raw: str | None = None
    raw_chars: int | None = None

    @classmethod
    def of(cls, key: str | None, raw: str | None) -> ModelAnswer:
        """An answer from its key and its full raw text (cut to the stored length here)."""
        if raw is None:
            return cls(key)
        return cls(key, raw[:MAX_RAW_ANSWER_CHARS], len(raw))

    @property
    def truncated(self) -> bool:
        """Whether the stored raw text is shorter than the answer was."""
        raw, chars = self.raw, self.raw_chars
        return raw is not None and chars is not None and chars > len(raw)


def check_answers(
    name: str, answers: Mapping[str, ModelAnswer]
) -> list[tuple[str, str, str | None, str | None, int | None]]:
    """A model's answers as (model, prompt_id, key, raw, raw_chars) rows, each field checked."""
    rows = []
    for prompt_id, answer in answers.items():
        where = f"model {name!r}: answer to prompt {prompt_id!r}"
        if not isinstance(answer, ModelAnswer):
            raise RegistryError(f"{where} is a {type(answer).__name__}, not a ModelAnswer")
        key, raw, raw_chars = answer.key, answer.raw, answer.raw_chars
        if key is None and raw is None:
            raise RegistryError(f"{where} has neither a key nor a raw text")
        if key is not None:
            if not isinstance(key, str) or not key or "\x00" in key:
                raise RegistryError(f"{where}: the key must be a non-empty string without NUL")
            if len(key) > MAX_ANSWER_KEY_CHARS:
                raise RegistryError(
                    f"{where}: the key is {len(key)} characters, over {MAX_ANSWER_KEY_CHARS}"
                )
        if raw is not None:
            if not isinstance(raw, str):
                raise RegistryError(f"{where}: the raw text is a {type(raw).__name__}, not text")
            if len(raw) > MAX_RAW_ANSWER_CHARS:
                raise RegistryError(
                    f"{where}: the raw text is {len(raw)} characters, over "
                    f"{MAX_RAW_ANSWER_CHARS} (cut it with ModelAnswer.of)"
                )
            if raw_chars is None:
                raw_chars = len(raw)
            whole = isinstance(raw_chars, int) and not isinstance(raw_chars, bool)
            if not whole or raw_chars < len(raw):
                raise RegistryError(f"{where}: raw_chars {raw_chars!r} is below the text's length")
        elif raw_chars is not None:
            raise RegistryError(f"{where}: raw_chars given without a raw text")
        rows.append((name, str(prompt_id), key, raw, raw_chars))
    return rows


def psi_bytes(psi: np.ndarray, label: str) -> bytes:
    """Psi as stored: little-endian float64 bytes of a non-empty vector of finite numbers."""
    array = np.asarray(psi, dtype="<f8").reshape(-1)
    if array.size == 0 or not np.isfinite(array).all():
        raise RegistryError(f"{label}: Psi must be a non-empty vector of finite numbers")
    return array.tobytes()


# ---------------------------------------------------------------------------- records
#: Characters of a record's ``source`` kept.
MAX_SOURCE_CHARS = 300


@dataclass(frozen=True)
class ModelRecord:
    """One model of the pool as the registry stores it (scores and Psi are kept separately).

    A record built to be stored (no ``created_at``) is refused when a field breaks a rule. One
    read back from the registry (it has a ``created_at``) whose endpoint or ``api_key_env`` an
    older, laxer version stored is kept instead, with ``problem`` saying what is wrong: its
    endpoint is kept masked (``masked_endpoint``) for display only, an ``api_key_env`` that looks
    like a key is dropped (never shown), and the model is never served.
    """

    name: str
    cost: ModelCost
    endpoint: str | None = None
    api_key_env: str | None = None
    tags: tuple[str, ...] = ()
    enabled: bool = True
    revision: int = 0
    created_at: str = ""
    updated_at: str = ""
    #: The ``model`` field the endpoint expects, when it differs from ``name`` (None: ``name``).
    #: Last, so that positional construction written for schema version 1 still works.
    upstream_model: str | None = None
    #: What it can do beyond plain text (``CAPABILITIES``); none until declared or probed.
    capabilities: tuple[str, ...] = ()
    #: Its context window and longest answer, in tokens (None: not known, not limited).
    context_window: int | None = None
    max_output_tokens: int | None = None
    #: Seconds its endpoint took to answer a representative prompt (median, measured during
    #: onboarding; None: not measured): the latency it is routed with until traffic is seen.
    latency_s: float | None = None
    #: How it joined the pool: the scores file, "onboarding of 'name'" (its endpoint's answers),
    #: "training model of the artifact", ... (None: added before this was recorded).
    source: str | None = None
    #: Why a record read back from the registry cannot be served (None: nothing is wrong).
    problem: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        check_model_name(self.name)
        read_back = bool(self.created_at)
        problems = []
        try:
            endpoint = check_endpoint(self.endpoint)
        except RegistryError as exc:
            if not read_back:
                raise
            problems.append(f"its stored endpoint is refused by the endpoint rule: {exc}")
            endpoint = masked_endpoint(str(self.endpoint).strip())
        object.__setattr__(self, "endpoint", endpoint)
        check_upstream_model(self.upstream_model, self.endpoint, self.name)
        try:
            key_env = check_api_key_env(self.api_key_env)
        except RegistryError:
            if not read_back:
                raise
            shape = (
                secret_shape(self.api_key_env)
                if isinstance(self.api_key_env, str) and self.api_key_env
                else "it is not a non-empty string"
            )
            problems.append(
                f"its stored api_key_env looks like a key ({shape}), not the name of a variable, "
                "and is not used or shown; add the model again with the variable's NAME"
            )
            key_env = None
        object.__setattr__(self, "api_key_env", key_env)
        object.__setattr__(self, "problem", "; ".join(problems) or None)
        tags = tuple(self.tags)
        if not all(isinstance(tag, str) and tag.strip() for tag in tags):
            raise RegistryError(f"model {self.name!r}: tags must be non-empty strings, got {tags}")
        object.__setattr__(self, "tags", tags)
        object.__setattr__(self, "capabilities", check_capabilities(self.name, self.capabilities))
        if self.latency_s is not None:
            latency = self.latency_s
            if (
                isinstance(latency, bool)
                or not isinstance(latency, int | float)
                or not (math.isfinite(latency) and latency >= 0)
            ):
                raise RegistryError(
                    f"model {self.name!r}: latency_s must be a number of seconds >= 0, "
                    f"got {latency!r}"
                )
            object.__setattr__(self, "latency_s", float(latency))
        if self.source is not None:
            if not isinstance(self.source, str):
                raise RegistryError(f"model {self.name!r}: source must be a string")
            # A description for people (it may name a file): one line, bounded.
            object.__setattr__(self, "source", " ".join(self.source.split())[:MAX_SOURCE_CHARS])
        for limit in ("context_window", "max_output_tokens"):
            value = check_token_limit(self.name, limit, getattr(self, limit))
            object.__setattr__(self, limit, value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the API key itself is never part of a record)."""
        return {
            "name": self.name,
            "cost_per_query": self.cost.per_query,
            "cost_per_1k_input": self.cost.per_1k_input,
            "cost_per_1k_output": self.cost.per_1k_output,
            "expected_output_tokens": self.cost.expected_output_tokens,
            "endpoint": self.endpoint,
            "upstream_model": self.upstream_model,
            "api_key_env": self.api_key_env,
            "tags": list(self.tags),
            "capabilities": list(self.capabilities),
            "context_window": self.context_window,
            "max_output_tokens": self.max_output_tokens,
            "latency_s": self.latency_s,
            "source": self.source,
            "enabled": self.enabled,
            "revision": self.revision,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class Binding:
    """The artifact a registry's scores refer to: its id and a fingerprint of its prompt ids."""

    artifact_id: str
    prompts_fingerprint: str


@dataclass
class NewModel:
    """A model to add: its record, scores and answers by prompt id, and Psi per artifact id."""

    record: ModelRecord
    scores: Mapping[str, float]
    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    answers: Mapping[str, ModelAnswer] = field(default_factory=dict)


# ---------------------------------------------------------------------------- fingerprints
def prompts_fingerprint(prompt_ids: Iterable[str]) -> str:
    """Order-independent fingerprint of a set of representative prompt ids."""
    digest = hashlib.sha256()
    for prompt_id in sorted(str(p) for p in prompt_ids):
        digest.update(prompt_id.encode("utf-8") + b"\0")
    return digest.hexdigest()[:32]


def pool_fingerprint(artifact_id: str, models: Iterable[tuple[str, int]]) -> str:
    """Fingerprint of (artifact, sorted (name, revision) pairs) of the routable models."""
    digest = hashlib.sha256(artifact_id.encode("utf-8") + b"\0")
    for name, revision in sorted(models):
        digest.update(f"{name}\0{int(revision)}\0".encode())
    return digest.hexdigest()[:32]
