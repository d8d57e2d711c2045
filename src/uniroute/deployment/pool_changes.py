"""Changes to the pool: the one place the CLI and the admin API add, onboard, remove, enable,
re-price, describe the capabilities of and calibrate models.

No function here writes an endpoint the rule of :mod:`uniroute.onboarding.endpoints` refuses (a
record is checked when built) or one whose host the caller's
:class:`~uniroute.onboarding.upstream_hosts.EndpointPolicy` refuses (the gateway's
``upstream_allowlist``; callers without one, the CLI, get the default policy, which refuses
link-local and cloud metadata hosts): :func:`check_endpoint_allowed` runs before any work.

Each function writes the registry (one transaction: no reader ever sees a model half-described)
and then refreshes the router, so the change is routed on return. Other processes see it when
they next refresh. The changes that need no artifact (removing, enabling, re-pricing, setting
capabilities) also take a bare :class:`~uniroute.registry.Registry`, for callers that hold no
router (the CLI's ``models remove|enable|disable|set-cost|update``); routers see such a change
at their next refresh.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as with_fields
from pathlib import Path
from types import EllipsisType
from typing import TYPE_CHECKING, Any

import numpy as np

from uniroute.artifact import Artifact
from uniroute.deployment.evidence import task_warnings
from uniroute.deployment.router import Router
from uniroute.deployment.snapshot import calibrate_pool
from uniroute.errors import CalibrationError, DataError, ModelExistsError, RegistryError
from uniroute.onboarding.upstream_hosts import EndpointPolicy
from uniroute.registry import (
    MAX_ANSWER_KEY_CHARS,
    ModelAnswer,
    ModelCost,
    ModelRecord,
    NewModel,
    Registry,
    align_scores,
)
from uniroute.registry.calibration import Policy, Target

if TYPE_CHECKING:  # the onboarding client (and its HTTP stack) loads only to onboard
    from uniroute.data.representative import RepresentativePrompt
    from uniroute.onboarding.client import OnboardingResult
    from uniroute.onboarding.graders import Grader
    from uniroute.onboarding.probes import ProbeReport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AddedModel:
    """Outcome of adding a model from scores: its record and how its prompt ids matched."""

    record: ModelRecord
    n_matched: int
    n_representative: int
    unknown_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: Tasks on which the model has no or thin evidence, each with what to do about it.
    evidence_warnings: list[str] = field(default_factory=list)
    #: Representative prompts with a recorded answer, and how many of those have a canonical key.
    n_answers: int = 0
    n_answer_keys: int = 0


@dataclass(frozen=True)
class OnboardedModel:
    """Outcome of onboarding a model from its endpoint: the answers' grading and the addition;
    ``probes`` says what the capability probes found (None: capabilities were declared, so
    nothing was probed)."""

    result: OnboardingResult
    added: AddedModel
    probes: ProbeReport | None = None


def check_can_add(router: Router, name: str, replace: bool) -> None:
    """Refuse, before any work is done, to add a model that exists unless replacing it."""
    if not replace and router.registry.has_model(name):
        raise ModelExistsError(
            f"model {name!r} is already in the registry {router.registry.path}; remove it first "
            "or replace it"
        )


def check_endpoint_allowed(record: ModelRecord, policy: EndpointPolicy | None = None) -> None:
    """Refuse, before any work is done, a record whose endpoint may not be stored or called.

    A record read back with a ``problem`` (a stored endpoint or key variable today's rules
    refuse) is never written again; an endpoint whose host ``policy`` (default: the default
    policy) refuses, after resolving its name, is a RegistryError naming the model.
    """
    if record.problem is not None:
        raise RegistryError(f"model {record.name!r} cannot be stored as it is: {record.problem}")
    if record.endpoint is not None:
        try:
            (policy or EndpointPolicy()).check(record.endpoint, RegistryError)
        except RegistryError as exc:
            raise RegistryError(f"model {record.name!r}: {exc}") from None


def answer_kind(grader: Grader) -> str | None:
    """The kind of canonical answer key a grader's answers get (None: answers get no key).

    Multiple choice compares option letters, numeric graders numbers, exact match normalised
    text; code and other graders' answers are not compared.
    """
    from uniroute.onboarding.graders import ExactMatchGrader, MultipleChoiceGrader, NumericGrader

    if isinstance(grader, MultipleChoiceGrader):
        return "choice"
    if isinstance(grader, NumericGrader):
        return "number"
    if isinstance(grader, ExactMatchGrader):
        return "exact"
    return None


def canonical_answers(
    prompts: Sequence[RepresentativePrompt],
    answers: Mapping[str, str | None],
    graders: Mapping[str, Grader] | None = None,
) -> dict[str, ModelAnswer]:
    """Raw answers to representative prompts as stored answers: canonical key and raw text.

    The key's kind comes from the prompt's grader (``graders`` overrides first, as onboarding
    resolves them); a key longer than ``MAX_ANSWER_KEY_CHARS`` is not kept (free text that long
    is not compared). Ids that are not representative prompts and None answers are left out.
    """
    from uniroute.answers import answer_key
    from uniroute.onboarding.graders import grader_for

    def kind_of(prompt: RepresentativePrompt) -> str | None:
        if graders:  # the client (and its HTTP stack) loads only when onboarding used it
            from uniroute.onboarding.client import grader_of

            return answer_kind(grader_of(prompt, graders))
        if prompt.task not in kinds:
            kinds[prompt.task] = answer_kind(grader_for(prompt.task))
        return kinds[prompt.task]

    kinds: dict[str, str | None] = {}
    stored: dict[str, ModelAnswer] = {}
    for prompt in prompts:
        raw = answers.get(prompt.prompt_id)
        if raw is None:
            continue
        kind = kind_of(prompt)
        key = None if kind is None else answer_key(raw, kind, prompt.text)
        if key is not None and (not key or len(key) > MAX_ANSWER_KEY_CHARS):
            key = None
        stored[prompt.prompt_id] = ModelAnswer.of(key, raw)
    return stored


def add_scored_model(
    router: Router,
    record: ModelRecord,
    scores: Mapping[str, float],
    *,
    answers: Mapping[str, str | None] | None = None,
    replace: bool = False,
    source: str = "scores",
    endpoint_policy: EndpointPolicy | None = None,
    graders: Mapping[str, Grader] | None = None,
) -> AddedModel:
    """Store a model record with its representative-prompt scores, Psi and answers; routable on
    return.

    Prompt ids that are not representative prompts are ignored (and reported); scores that
    match none is an error naming ``source``. ``answers`` are the model's raw answers by prompt
    id: each is stored with its canonical key (see :func:`canonical_answers`) in the same
    transaction. The endpoint is checked against ``endpoint_policy`` first (see
    :func:`check_endpoint_allowed`).
    """
    started = time.perf_counter()
    check_endpoint_allowed(record, endpoint_policy)
    artifact = router.artifact
    aligned = align_scores(scores, artifact.prompt_ids, source)
    if not np.isfinite(aligned.values).any():
        raise DataError(f"{source}: every matched score is missing")
    psi = artifact.router.model_features(aligned.values, record.name)
    matched = {
        prompt_id: float(value)
        for prompt_id, value in zip(artifact.prompt_ids, aligned.values.tolist(), strict=True)
        if math.isfinite(value)
    }
    stored_answers = (
        canonical_answers(artifact.representative_prompts, answers, graders) if answers else {}
    )
    unknown = list(aligned.unknown_ids)
    if answers:
        known = set(artifact.prompt_ids) | set(unknown) | set(map(str, scores))
        unknown += [str(p) for p in answers if str(p) not in known]
    if record.source is None:
        record = with_fields(record, source=source)
    stored = router.registry.add_models(
        [NewModel(record, matched, {artifact.artifact_id: psi}, stored_answers)], replace=replace
    )[0]
    router.refresh()
    return AddedModel(
        stored,
        aligned.n_matched,
        len(artifact.prompt_ids),
        unknown,
        time.perf_counter() - started,
        task_warnings(artifact, matched),
        n_answers=len(stored_answers),
        n_answer_keys=sum(a.key is not None for a in stored_answers.values()),
    )


def onboard_model(
    router: Router,
    record: ModelRecord,
    *,
    replace: bool = False,
    cache_path: str | Path | None = None,
    progress: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    endpoint_policy: EndpointPolicy | None = None,
    probe_capabilities: bool | None = None,
    **settings: Any,
) -> OnboardedModel:
    """Ask the model's endpoint the representative prompts, grade the answers, add the model
    with its scores and its answers (raw text and canonical key).

    When the record declares no capability (and ``probe_capabilities`` is not False; True
    probes even then), the endpoint is probed for tools and JSON mode
    (:mod:`uniroute.onboarding.probes`) after it answered, and the record stores what the probes
    found; a probe that fails only means "not capable", never a failed onboarding.

    ``settings`` are the onboarding options (api_style, concurrency, timeout, retries,
    max_tokens, skip_ungradeable_tasks, max_failure_rate). The endpoint is checked against
    ``endpoint_policy`` before it is asked anything. Its answers are cached as they arrive in
    the registry's answer cache (or in the file ``cache_path``), so a run that is interrupted
    and started again, by any process on the registry, asks only the prompts still unanswered.
    Any failure leaves the pool unchanged.
    """
    if record.endpoint is None:
        raise DataError(
            f"model {record.name!r}: onboarding needs its endpoint (an OpenAI base URL)"
        )
    check_endpoint_allowed(record, endpoint_policy)
    check_can_add(router, record.name, replace)
    from uniroute.onboarding.client import onboard_endpoint

    result = onboard_endpoint(
        record.name,
        record.endpoint,
        router.artifact.representative_prompts,
        upstream_model=record.upstream_model,
        api_key_env=record.api_key_env,
        progress=progress,
        on_progress=on_progress,
        cache_path=cache_path,
        cache=router.registry.answer_cache if cache_path is None else None,
        endpoint_policy=endpoint_policy,
        **settings,
    )
    probes = None
    wanted = not record.capabilities if probe_capabilities is None else probe_capabilities
    if wanted:
        probes = _probe(record, endpoint_policy, settings)
        found = tuple(sorted({*record.capabilities, *probes.capabilities}))
        record = dataclasses.replace(record, capabilities=found)
    # The endpoint's measured latency routes it until traffic is seen (unless one was given).
    if record.latency_s is None and result.median_answer_s is not None:
        record = with_fields(record, latency_s=result.median_answer_s)
    # Every answer the endpoint gave (cached ones included) is kept with the scores.
    added = add_scored_model(
        router,
        record,
        result.scores,
        answers=result.answers,
        replace=replace,
        source=f"onboarding of {record.name!r}",
        endpoint_policy=endpoint_policy,
        graders=settings.get("graders"),
    )
    return OnboardedModel(result, added, probes)


def _probe(
    record: ModelRecord, endpoint_policy: EndpointPolicy | None, settings: Mapping[str, Any]
) -> ProbeReport:
    """The capability probes of a record's endpoint; whatever goes wrong, a report (never an
    error: a probe decides a capability, not whether the model joins the pool)."""
    from uniroute.onboarding.probes import MAX_PROBE_SECONDS, ProbeReport, probe_capabilities

    if settings.get("api_style", "chat") != "chat":
        return ProbeReport(
            skipped="the probes speak the chat API; this model is onboarded on /completions"
        )
    assert record.endpoint is not None
    try:
        return probe_capabilities(
            record.endpoint,
            record.upstream_model or record.name,
            api_key_env=record.api_key_env,
            timeout=min(float(settings.get("timeout", MAX_PROBE_SECONDS)), MAX_PROBE_SECONDS),
            endpoint_policy=endpoint_policy,
        )
    except Exception as exc:  # a bug or an unforeseen answer must not cost the onboarding
        logger.exception("capability probes of model %r failed", record.name)
        return ProbeReport(skipped=f"the probes failed ({type(exc).__name__})")


def remove_model(router: Router | Registry, name: str) -> None:
    """Delete a model from the registry and stop routing to it."""
    _registry_of(router).remove_model(name)
    _refresh(router)


def set_enabled(router: Router | Registry, name: str, enabled: bool) -> ModelRecord:
    """Put a model in or out of rotation (it stays in the registry)."""
    record = _registry_of(router).set_enabled(name, enabled)
    _refresh(router)
    return record


def set_cost(router: Router | Registry, name: str, cost: ModelCost) -> ModelRecord:
    """Change a model's price."""
    record = _registry_of(router).set_cost(name, cost)
    _refresh(router)
    return record


def set_capabilities(
    router: Router | Registry,
    name: str,
    *,
    capabilities: Iterable[str] | EllipsisType = ...,
    context_window: int | None | EllipsisType = ...,
    max_output_tokens: int | None | EllipsisType = ...,
) -> ModelRecord:
    """Change what a model can do and its token limits (a field left out is kept)."""
    record = _registry_of(router).set_capabilities(
        name,
        capabilities=capabilities,
        context_window=context_window,
        max_output_tokens=max_output_tokens,
    )
    _refresh(router)
    return record


def _registry_of(router: Router | Registry) -> Registry:
    return router if isinstance(router, Registry) else router.registry


def _refresh(router: Router | Registry) -> None:
    if isinstance(router, Router):
        router.refresh()


def calibrate(
    router: Router, target: Target, *, store: bool = True, latency_weight: float | None = None
) -> Policy:
    """Solve a target on the representative prompts for the current pool; store as default.

    ``latency_weight`` (mu) is stored with it for requests that give none; None keeps the
    stored policy's (0 when there is none).
    """
    router.refresh()
    snapshot = router.snapshot
    if not len(snapshot.pool):
        raise CalibrationError(f"no enabled model in the registry {router.registry.path}")
    policy = calibrate_pool(router.artifact, snapshot.pool, target, snapshot.fingerprint)
    if latency_weight is None and snapshot.policy is not None:
        latency_weight = snapshot.policy.latency_weight
    policy = with_fields(policy, latency_weight=latency_weight or 0.0)
    if store:
        router.registry.set_policy(policy)
        router.refresh()
    return policy


def seed_registry(
    artifact: Artifact, registry: Registry, *, replace: bool = True
) -> list[ModelRecord]:
    """Bind a registry to an artifact and add its training models (scores, cost, Psi and, when
    the artifact has them, their answer keys)."""
    registry.bind(artifact.artifact_id, artifact.prompt_ids)
    models = []
    for j, name in enumerate(artifact.training_models):
        values = artifact.training_scores[:, j]
        scores = {
            prompt_id: float(value)
            for prompt_id, value in zip(artifact.prompt_ids, values.tolist(), strict=True)
            if math.isfinite(value)
        }
        record = ModelRecord(
            name=name,
            cost=ModelCost(per_query=float(artifact.training_costs[j])),
            tags=("training",),
            source=f"training model of artifact {artifact.artifact_id}",
        )
        psi = artifact.router.model_features(values, name)
        answers = {}
        if artifact.training_answers is not None:
            # The data records keys only (no raw text): a prompt without a key gets no row.
            answers = {
                prompt_id: ModelAnswer(key)
                for prompt_id, key in zip(
                    artifact.prompt_ids, artifact.training_answers[:, j], strict=True
                )
                if key is not None
            }
        models.append(NewModel(record, scores, {artifact.artifact_id: psi}, answers))
    return registry.add_models(models, replace=replace)
