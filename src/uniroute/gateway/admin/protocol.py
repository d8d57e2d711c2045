"""Request models of the admin API: every body is checked here, before any work is done.

Unknown fields are refused (``extra="forbid"``) and values are not coerced (``strict``): a
400 names the field. A model's record and price are built with the registry's own rules
(``ModelRecord``, ``ModelCost``), and a calibration target with ``make_target``, so the API
accepts exactly what the registry and the CLI accept.
"""

from __future__ import annotations

import contextlib
import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from uniroute.errors import RegistryError
from uniroute.gateway.errors import invalid
from uniroute.onboarding.endpoints import check_endpoint
from uniroute.registry import ModelCost, ModelRecord
from uniroute.registry.calibration import Target, make_target
from uniroute.registry.costs import per_1k_price
from uniroute.registry.keys import (
    check_allowed_models,
    check_budget,
    check_key_name,
    check_rpm,
    check_team,
)
from uniroute.registry.records import CAPABILITIES, MAX_TOKEN_LIMIT
from uniroute.registry.score_files import MAX_FILE_ANSWER_CHARS

#: The names of ``registry.records.CAPABILITIES``, spelled out so the schema lists them.
Capability = Literal["tools", "vision", "json"]
#: A token limit as the schema shows it (the validators check the same bounds first).
TokenLimit = Annotated[int, Field(ge=1, le=MAX_TOKEN_LIMIT)]

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
_PRICE_FIELDS = (
    "cost",
    "cost_per_1k_input",
    "cost_per_1k_output",
    "cost_per_1m_input",
    "cost_per_1m_output",
    "expected_output_tokens",
)


def _finite_number(value: Any, field: str) -> float | None:
    if value is None:
        return None
    number = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        # An integer beyond float range overflows (and may be too long to print): refused too.
        with contextlib.suppress(OverflowError):
            number = float(value)
    if number is None or not math.isfinite(number):
        huge = isinstance(value, int) and not isinstance(value, bool)
        shown = "an integer beyond float range" if huge else repr(value)[:60]
        raise invalid("invalid_type", f"'{field}' must be a finite number, got {shown}", field)
    return number


def _scores(value: Any) -> dict[str, float]:
    """Scores as ``{prompt_id: score}`` or ``[{"prompt_id": ..., "score": ...}, ...]``; a null
    score is missing (never 0) and left out."""
    if isinstance(value, list):
        rows: dict[str, Any] = {}
        for index, row in enumerate(value):
            if not isinstance(row, dict) or "prompt_id" not in row or "score" not in row:
                raise invalid(
                    "invalid_scores",
                    f"scores[{index}] must be an object with prompt_id and score",
                    "scores",
                )
            prompt_id = str(row["prompt_id"])
            if prompt_id in rows:
                raise invalid(
                    "invalid_scores",
                    f"scores[{index}]: prompt_id {prompt_id!r} appears twice",
                    "scores",
                )
            rows[prompt_id] = row["score"]
        value = rows
    if not isinstance(value, dict) or not value:
        raise invalid(
            "invalid_scores",
            "'scores' must be a non-empty object {prompt_id: score} or a list of "
            "{prompt_id, score}",
            "scores",
        )
    checked: dict[str, float] = {}
    for prompt_id, score in value.items():
        if score is None:
            continue
        if (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            # Compared as it is: float() of a huge integer would overflow.
            or not (0 <= score <= 1)
        ):
            raise invalid(
                "invalid_scores",
                f"score of prompt {prompt_id!r} must be a number in [0, 1], got {score!r}",
                "scores",
            )
        checked[str(prompt_id)] = float(score)
    if not checked:
        raise invalid("invalid_scores", "every score given is missing (null)", "scores")
    return checked


def _answers(value: Any) -> dict[str, str]:
    """Raw answers as ``{prompt_id: answer text}``; a null answer is none given and left out."""
    if not isinstance(value, dict):
        raise invalid(
            "invalid_answers", "'answers' must be an object {prompt_id: answer text}", "answers"
        )
    checked: dict[str, str] = {}
    for prompt_id, answer in value.items():
        if answer is None:
            continue
        if not isinstance(answer, str) or "\x00" in answer:
            raise invalid(
                "invalid_answers",
                f"answer to prompt {prompt_id!r} must be text without NUL, got "
                f"{type(answer).__name__}",
                "answers",
            )
        if len(answer) > MAX_FILE_ANSWER_CHARS:
            raise invalid(
                "invalid_answers",
                f"answer to prompt {prompt_id!r} is {len(answer)} characters, over "
                f"{MAX_FILE_ANSWER_CHARS}",
                "answers",
            )
        checked[str(prompt_id)] = answer
    return checked


def _capabilities(value: Any) -> list[str]:
    """A list of capability names (``CAPABILITIES``), sorted, each once; [] declares none."""
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise invalid(
            "invalid_capabilities",
            f"'capabilities' must be a list of names from {list(CAPABILITIES)} ([] for none)",
            "capabilities",
        )
    unknown = [c for c in value if c not in CAPABILITIES]
    if unknown:
        raise invalid(
            "invalid_capabilities",
            f"unknown capability {unknown[0][:60]!r}; known: {list(CAPABILITIES)}",
            "capabilities",
        )
    return sorted(set(value))


def _token_limit(value: Any, field: str) -> int | None:
    """A context window or output length: null (not known) or a whole number of tokens."""
    if value is None:
        return None
    # JSON has one number type: 8192.0 is the whole number 8192 (as JSON Schema's integers say).
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_TOKEN_LIMIT:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKEN_LIMIT:
        shown = repr(value)[:60]
        raise invalid(
            "invalid_type",
            f"'{field}' must be null or a whole number of tokens from 1 to {MAX_TOKEN_LIMIT:,}, "
            f"got {shown}",
            field,
        )
    return value


class CapabilitiesRequest(BaseModel):
    """``POST /admin/models/{name}/capabilities``: any of ``capabilities`` (a list; [] clears
    them), ``context_window`` and ``max_output_tokens`` (null: not known); a field left out is
    kept."""

    model_config = _STRICT

    capabilities: list[Capability] | None = None
    context_window: TokenLimit | None = None
    max_output_tokens: TokenLimit | None = None

    @field_validator("capabilities", mode="before")
    @classmethod
    def _names(cls, value: Any) -> list[str]:
        return _capabilities(value)

    @field_validator("context_window", "max_output_tokens", mode="before")
    @classmethod
    def _limit(cls, value: Any, info: ValidationInfo) -> int | None:
        return _token_limit(value, info.field_name or "context_window")

    @model_validator(mode="after")
    def _something(self) -> CapabilitiesRequest:
        if not self.model_fields_set:
            raise invalid(
                "missing_field",
                "give 'capabilities', 'context_window' or 'max_output_tokens'",
                "capabilities",
            )
        return self

    def changes(self) -> dict[str, Any]:
        """The fields given, as keyword arguments of ``pool_changes.set_capabilities``."""
        return {key: getattr(self, key) for key in sorted(self.model_fields_set)}


class PriceRequest(BaseModel):
    """A price: ``cost`` per query, or an input and an output token price, each per 1k tokens
    (``cost_per_1k_input``, ``cost_per_1k_output``) or per 1M (``cost_per_1m_input``,
    ``cost_per_1m_output``), with ``expected_output_tokens`` (default the registry's); the
    body of ``POST /admin/models/{name}/cost``."""

    model_config = _STRICT

    cost: float | None = None
    cost_per_1k_input: float | None = None
    cost_per_1k_output: float | None = None
    cost_per_1m_input: float | None = None
    cost_per_1m_output: float | None = None
    expected_output_tokens: float | None = None
    _price: ModelCost = PrivateAttr()

    @field_validator(*_PRICE_FIELDS, mode="before")
    @classmethod
    def _number(cls, value: Any, info: ValidationInfo) -> float | None:
        return _finite_number(value, info.field_name or "cost")

    @model_validator(mode="after")
    def _build_price(self) -> PriceRequest:
        prices: dict[str, float] = {}
        try:
            for key, value in (
                ("per_query", self.cost),
                (
                    "per_1k_input",
                    per_1k_price(self.cost_per_1k_input, self.cost_per_1m_input, "input"),
                ),
                (
                    "per_1k_output",
                    per_1k_price(self.cost_per_1k_output, self.cost_per_1m_output, "output"),
                ),
                ("expected_output_tokens", self.expected_output_tokens),
            ):
                if value is not None:
                    prices[key] = value
            self._price = ModelCost(**prices)
        except ValueError as exc:
            raise invalid("invalid_cost", f"cost: {exc}", "cost") from None
        return self

    @property
    def price(self) -> ModelCost:
        """The price as the registry stores it."""
        return self._price


class OnboardingOptions(BaseModel):
    """Settings of an onboarding run (``onboarding`` in an add-model body); unset ones take
    the onboarding client's defaults."""

    model_config = _STRICT

    api_style: Literal["chat", "completions"] | None = None
    concurrency: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    retries: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    skip_ungradeable_tasks: bool | None = None
    max_failure_rate: float | None = Field(default=None, ge=0, le=1)
    #: Probe the endpoint for tools and JSON mode (default: when no capability is declared).
    probe_capabilities: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_options(cls, value: Any) -> Any:
        if not isinstance(value, dict) or set(value) - set(cls.model_fields):
            raise invalid(
                "unknown_field",
                f"'onboarding' may hold only {sorted(cls.model_fields)}",
                "onboarding",
            )
        return value

    def settings(self) -> dict[str, Any]:
        """The options given, as keyword arguments of ``pool_changes.onboard_model``."""
        return self.model_dump(exclude_none=True)


class AddModelRequest(PriceRequest):
    """``POST /admin/models``: a model's record and price, and **either** its ``scores`` on the
    representative prompts (optionally with its raw ``answers``: an ``answer`` in each score
    row, or an object ``{prompt_id: text}``) **or** ``onboard: true`` (its endpoint is asked
    them)."""

    name: str = Field(default=None, validate_default=True)
    endpoint: str | None = None
    upstream_model: str | None = None
    api_key_env: str | None = None
    tags: list[str] = Field(default_factory=list)
    capabilities: list[Capability] | None = None
    context_window: TokenLimit | None = None
    max_output_tokens: TokenLimit | None = None
    enabled: bool = True
    replace: bool = False
    scores: dict[str, float] | None = None
    answers: dict[str, str] | None = None
    onboard: bool = False
    onboarding: OnboardingOptions = Field(default_factory=OnboardingOptions)
    _record: ModelRecord = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _row_answers(cls, value: Any) -> Any:
        # Score rows may carry the model's answer: moved to 'answers' before fields are checked.
        if not isinstance(value, dict) or not isinstance(value.get("scores"), list):
            return value
        rows = value["scores"]
        given = {
            str(row["prompt_id"]): row["answer"]
            for row in rows
            if isinstance(row, dict) and "answer" in row and "prompt_id" in row
        }
        if not given:
            return value
        if value.get("answers") is not None:
            raise invalid(
                "invalid_answers",
                "give answers either in the score rows or as 'answers', not both",
                "answers",
            )
        stripped = [
            {k: v for k, v in row.items() if k != "answer"} if isinstance(row, dict) else row
            for row in rows
        ]
        return {**value, "scores": stripped, "answers": given}

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise invalid("missing_field", "'name' must be a non-empty string", "name")
        return value

    @field_validator("endpoint", "upstream_model", "api_key_env", mode="before")
    @classmethod
    def _string(cls, value: Any, info: ValidationInfo) -> str | None:
        if value is not None and (not isinstance(value, str) or not value.strip()):
            field = info.field_name
            raise invalid("invalid_type", f"'{field}' must be a non-empty string", field)
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        # The one endpoint rule, here so that its refusal names the field.
        try:
            return check_endpoint(value, RegistryError)
        except RegistryError as exc:
            raise invalid("invalid_request", str(exc), "endpoint") from None

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise invalid("invalid_type", "'tags' must be a list of strings", "tags")
        return value

    @field_validator("capabilities", mode="before")
    @classmethod
    def _capabilities(cls, value: Any) -> list[str] | None:
        return None if value is None else _capabilities(value)

    @field_validator("context_window", "max_output_tokens", mode="before")
    @classmethod
    def _limit(cls, value: Any, info: ValidationInfo) -> int | None:
        return _token_limit(value, info.field_name or "context_window")

    @field_validator("enabled", "replace", "onboard", mode="before")
    @classmethod
    def _flag(cls, value: Any, info: ValidationInfo) -> bool:
        if not isinstance(value, bool):
            field = info.field_name
            raise invalid("invalid_type", f"'{field}' must be true or false", field)
        return value

    @field_validator("scores", mode="before")
    @classmethod
    def _scores(cls, value: Any) -> dict[str, float] | None:
        return None if value is None else _scores(value)

    @field_validator("answers", mode="before")
    @classmethod
    def _answers(cls, value: Any) -> dict[str, str] | None:
        return None if value is None else _answers(value)

    @model_validator(mode="after")
    def _build_record(self) -> AddModelRequest:
        if (self.scores is not None) == self.onboard:
            raise invalid(
                "missing_field",
                "give either 'scores' or 'onboard': true (with an 'endpoint')",
                "scores",
            )
        if self.onboard and self.answers is not None:
            raise invalid(
                "invalid_answers",
                "'answers' go with 'scores'; onboarding records the endpoint's own answers",
                "answers",
            )
        if self.onboard and self.endpoint is None:
            raise invalid(
                "missing_field",
                "onboarding needs the model's 'endpoint' (an OpenAI base URL)",
                "endpoint",
            )
        # The registry's own rules; a field it refuses is a 400 with its message.
        self._record = ModelRecord(
            name=self.name,
            cost=self.price,
            endpoint=self.endpoint,
            upstream_model=self.upstream_model,
            api_key_env=self.api_key_env,
            tags=tuple(self.tags),
            enabled=self.enabled,
            capabilities=tuple(self.capabilities or ()),
            context_window=self.context_window,
            max_output_tokens=self.max_output_tokens,
        )
        # Declared capabilities (even []) are not probed, unless the body asks for probes.
        options = self.onboarding
        if self.capabilities is not None and options.probe_capabilities is None:
            options.probe_capabilities = False
        return self

    @property
    def record(self) -> ModelRecord:
        """The record to store."""
        return self._record


class ShareTarget(BaseModel):
    """``target_share``: this share of the traffic (in [0, 1]) to ``model``."""

    model_config = _STRICT

    model: str
    share: float


class RecalibrateRequest(BaseModel):
    """``POST /admin/recalibrate``: one target, or none (an empty body) for the stored one,
    and optionally the ``latency_weight`` stored with it."""

    model_config = _STRICT

    target_cost: float | None = None
    target_quality: float | None = None
    target_share: ShareTarget | None = None
    #: mu, stored with the policy (None: keep the stored one).
    latency_weight: float | None = None
    _target: Target | None = PrivateAttr(default=None)

    @field_validator("target_cost", "target_quality", mode="before")
    @classmethod
    def _number(cls, value: Any, info: ValidationInfo) -> float | None:
        return _finite_number(value, info.field_name or "target")

    @field_validator("latency_weight", mode="before")
    @classmethod
    def _weight(cls, value: Any) -> float | None:
        weight = _finite_number(value, "latency_weight")
        if weight is not None and weight < 0:
            raise invalid("invalid_value", "'latency_weight' must be >= 0", "latency_weight")
        return weight

    @field_validator("target_share", mode="before")
    @classmethod
    def _share(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, dict) or set(value) != {"model", "share"}):
            raise invalid(
                "invalid_type",
                '\'target_share\' must be {"model": name, "share": p}',
                "target_share",
            )
        return value

    @model_validator(mode="after")
    def _build_target(self) -> RecalibrateRequest:
        share = self.target_share
        if self.target_cost is None and self.target_quality is None and share is None:
            return self
        self._target = make_target(
            target_cost=self.target_cost,
            target_quality=self.target_quality,
            target_share=None if share is None else (share.model, share.share),
        )
        return self

    @property
    def target(self) -> Target | None:
        """The target given, or None (solve the stored target again)."""
        return self._target


def _checked(check: Any, value: Any, field: str, *extra: Any) -> Any:
    """A field checked by the registry's own rule; its refusal is a 400 naming the field."""
    try:
        return check(value, *extra)
    except RegistryError as exc:
        raise invalid("invalid_key_field", str(exc), field) from None


class CreateKeyRequest(BaseModel):
    """``POST /admin/keys``: a name, and optionally a team, the models and the limits."""

    model_config = _STRICT

    name: str
    team: str | None = None
    allowed_models: list[str] | None = None
    rpm_limit: int | None = None
    daily_spend_limit: float | None = None
    monthly_spend_limit: float | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        return _checked(check_key_name, value, "name")

    @field_validator("team", mode="before")
    @classmethod
    def _team(cls, value: Any) -> Any:
        return _checked(check_team, value, "team")

    @field_validator("allowed_models", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            raise invalid(
                "invalid_key_field", "'allowed_models' must be a list of model names",
                "allowed_models",
            )  # fmt: skip
        return list(_checked(check_allowed_models, value, "allowed_models"))

    @field_validator("rpm_limit", mode="before")
    @classmethod
    def _rpm(cls, value: Any) -> Any:
        return _checked(check_rpm, value, "rpm_limit")

    @field_validator("daily_spend_limit", "monthly_spend_limit", mode="before")
    @classmethod
    def _budget(cls, value: Any, info: Any) -> Any:
        return _checked(check_budget, value, info.field_name, info.field_name)
