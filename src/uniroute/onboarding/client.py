"""Onboarding a model by querying its OpenAI-compatible endpoint with the representative prompts.

Each representative prompt is sent once (bounded concurrency, per-request timeout, retries with
exponential backoff on connection errors, 429 and 5xx), every raw answer is cached as it arrives
(so an interrupted run resumes where it stopped), and each answer is graded by the grader of its
prompt's task. The caller (``uniroute models add NAME --endpoint URL``) stores the scores only
when this returns: any ``OnboardingError`` leaves the registry unchanged.

The API key is read from the environment variable named by ``api_key_env`` at call time; it is
sent only to the endpoint, never logged, cached or put in an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import math
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx

from uniroute._checks import non_negative_int, non_negative_number
from uniroute._retry import parse_retry_after, retry
from uniroute.data.paths import default_cache_dir
from uniroute.data.representative import RepresentativePrompt
from uniroute.errors import GradingError, OnboardingError
from uniroute.onboarding.answer_cache import AnswerCache, AnswerStore
from uniroute.onboarding.endpoints import base_url as endpoint_base_url
from uniroute.onboarding.graders import BaseGrader, Grader, grader_for
from uniroute.onboarding.upstream_hosts import EndpointPolicy

API_STYLES = ("chat", "completions")
# Answers seen before giving up early on an endpoint none of whose answers can be graded.
_EARLY_GARBAGE_CHECK = 20

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True)
class PromptFailure:
    """A prompt that got no usable answer (after retries) or could not be graded."""

    prompt_id: str
    reason: str


@dataclass
class OnboardingResult:
    """Scores of a model on the representative prompts, and how they were obtained.

    ``scores`` holds only graded prompts; a prompt absent from it is missing (NaN), never 0:
    see ``failures`` (no answer) and ``skipped`` (not asked: no usable reference).
    """

    model: str
    endpoint: str
    scores: dict[str, float]
    per_task_accuracy: dict[str, tuple[float, int]]
    answers_fetched: int
    answers_from_cache: int
    failures: list[PromptFailure] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    ungradeable: list[str] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    #: Median seconds the endpoint took per answer fetched now (None: every answer was cached).
    median_answer_s: float | None = None

    def summary(self) -> str:
        """A short human-readable report: accuracy per task and what was fetched or skipped."""
        lines = [f"model {self.model!r} at {self.endpoint}"]
        for task, (accuracy, n) in sorted(self.per_task_accuracy.items()):
            lines.append(f"  {task:<30} accuracy {accuracy:6.1%}  ({n} prompts)")
        lines.append(
            f"  answers fetched {self.answers_fetched}, from cache {self.answers_from_cache}, "
            f"failed {len(self.failures)}, skipped {len(self.skipped)}, "
            f"ungradeable {len(self.ungradeable)}, {self.elapsed_s:.1f} s"
        )
        return "\n".join(lines)


class _PromptFailedError(Exception):
    """One prompt got no answer; ``connection`` tells an unreachable endpoint from a bad reply.

    ``transient`` failures (connection errors, timeouts, 429, 5xx) are retried, after at least
    ``retry_after`` seconds when the endpoint asked for it.
    """

    def __init__(
        self,
        reason: str,
        *,
        connection: bool = False,
        status: int | None = None,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connection = connection
        self.status = status
        self.transient = transient
        self.retry_after = retry_after


def _is_transient(exc: Exception) -> bool:
    return isinstance(exc, _PromptFailedError) and exc.transient


def _requested_delay(exc: Exception) -> float | None:
    return exc.retry_after if isinstance(exc, _PromptFailedError) else None


@dataclass
class _Plan:
    prompt: RepresentativePrompt
    grader: Grader


def completion_url(base_url: str, api_style: str) -> str:
    """The URL to POST to: ``BASE/chat/completions`` (chat) or ``BASE/completions``."""
    base = endpoint_base_url(base_url)
    return f"{base}/chat/completions" if api_style == "chat" else f"{base}/completions"


def grader_of(prompt: RepresentativePrompt, overrides: Mapping[str, Grader] | None) -> Grader:
    """The grader onboarding uses for a prompt: the first matching override, else the default."""
    for pattern, grader in (overrides or {}).items():
        if fnmatch.fnmatchcase(prompt.task.lower(), pattern.lower()):
            return grader
    return grader_for(prompt.task)


def _plan(
    prompts: Sequence[RepresentativePrompt],
    overrides: Mapping[str, Grader] | None,
    skip_ungradeable_tasks: bool,
) -> tuple[list[_Plan], dict[str, str]]:
    """Which prompts to ask, with their graders, and which to skip (with the reason)."""
    plans: list[_Plan] = []
    unusable: dict[str, list[tuple[str, str]]] = {}
    per_task: dict[str, int] = {}
    for prompt in prompts:
        grader = grader_of(prompt, overrides)
        per_task[prompt.task] = per_task.get(prompt.task, 0) + 1
        if isinstance(grader, BaseGrader) and grader.requires_reference:
            try:
                grader.check_reference(prompt.reference, prompt)
            except GradingError as exc:
                unusable.setdefault(prompt.task, []).append((prompt.prompt_id, str(exc)))
                continue
        plans.append(_Plan(prompt, grader))
    skipped: dict[str, str] = {}
    hopeless = {task: bad for task, bad in unusable.items() if len(bad) == per_task[task]}
    if hopeless and not skip_ungradeable_tasks:
        details = "; ".join(
            f"task {task!r}: none of its {len(bad)} prompts can be graded (e.g. {bad[0][1]})"
            for task, bad in sorted(hopeless.items())
        )
        raise OnboardingError(
            f"{details}. Coding tasks (MBPP, HumanEval) need unit tests in each prompt's reference "
            "(a JSON list of assert statements; RouterBench ships none); see docs/ONBOARDING.md, "
            "or skip such tasks (skip_ungradeable_tasks=True)"
        )
    for bad in unusable.values():
        for prompt_id, reason in bad:
            skipped[prompt_id] = reason
    if not plans:
        raise OnboardingError("no representative prompt can be graded; nothing to ask")
    return plans, skipped


def _check_arguments(
    prompts: Sequence[RepresentativePrompt],
    api_style: str,
    concurrency: int,
    timeout: float,
    retries: int,
    backoff: float,
    max_tokens: int,
    temperature: float,
    max_failure_rate: float,
    max_ungradeable_rate: float,
) -> None:
    if api_style not in API_STYLES:
        raise ValueError(f"api_style must be one of {API_STYLES}, got {api_style!r}")
    if int(concurrency) != concurrency or concurrency < 1:
        raise ValueError(f"concurrency must be a whole number >= 1, got {concurrency}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    non_negative_int(retries, "retries")
    non_negative_number(backoff, "backoff")
    if int(max_tokens) != max_tokens or max_tokens < 1:
        raise ValueError(f"max_tokens must be a whole number >= 1, got {max_tokens}")
    non_negative_number(temperature, "temperature")
    for label, rate in (
        ("max_failure_rate", max_failure_rate),
        ("max_ungradeable_rate", max_ungradeable_rate),
    ):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{label} must lie in [0, 1], got {rate}")
    if not prompts:
        raise OnboardingError("no representative prompts to ask")
    seen: set[str] = set()
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, RepresentativePrompt):
            raise ValueError(
                f"prompts[{index}] is a {type(prompt).__name__}, not a RepresentativePrompt"
            )
        if prompt.prompt_id in seen:
            raise OnboardingError(f"prompt id {prompt.prompt_id!r} is given twice")
        seen.add(prompt.prompt_id)


def _answer_text(response: httpx.Response, api_style: str) -> str:
    """The answer in an OpenAI-style response body (an empty string for a null content)."""
    try:
        body = response.json()
        choice = body["choices"][0]
        text = choice["message"]["content"] if api_style == "chat" else choice["text"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _PromptFailedError(
            f"HTTP {response.status_code} with a body that is not an OpenAI-style "
            f"{'chat completion' if api_style == 'chat' else 'completion'}: {response.text[:120]!r}"
        ) from None
    if text is None:
        return ""
    if not isinstance(text, str):
        raise _PromptFailedError(f"answer content is a {type(text).__name__}, not text")
    return text


def _error_message(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    return str(message)[:200]


class _Session:
    """One onboarding run: the HTTP client, the counters that decide when to give up."""

    def __init__(
        self,
        name: str,
        url: str,
        payload: dict,
        api_style: str,
        api_key_env: str | None,
        retries: int,
        backoff: float,
        fail_fast_after: int,
    ) -> None:
        self.name = name
        self.url = url
        self.payload = payload
        self.api_style = api_style
        self.api_key_env = api_key_env
        self.retries = retries
        self.backoff = backoff
        self.fail_fast_after = fail_fast_after
        self.consecutive_failures = 0

    async def ask(self, client: httpx.AsyncClient, prompt: RepresentativePrompt) -> str:
        """The endpoint's answer to one prompt, retrying transient failures."""
        body = dict(self.payload)
        if self.api_style == "chat":
            body["messages"] = [{"role": "user", "content": prompt.text}]
        else:
            body["prompt"] = prompt.text
        return await retry(
            lambda: self._ask_once(client, body),
            attempts=self.retries + 1,
            backoff=self.backoff,
            retryable=_is_transient,
            retry_after=_requested_delay,
        )

    async def _ask_once(self, client: httpx.AsyncClient, body: dict) -> str:
        """One request; a failure worth another attempt is a transient _PromptFailedError."""
        try:
            response = await client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise _PromptFailedError(
                f"timed out ({type(exc).__name__})", connection=True, transient=True
            ) from None
        except httpx.TransportError as exc:
            raise _PromptFailedError(
                f"cannot connect: {exc or type(exc).__name__}", connection=True, transient=True
            ) from None
        status = response.status_code
        if status in (401, 403):
            key_note = (
                f"check the key in environment variable {self.api_key_env}"
                if self.api_key_env
                else "it needs an API key: pass the name of the environment variable "
                "holding it (--api-key-env)"
            )
            raise OnboardingError(
                f"endpoint {self.url} of model {self.name!r} rejected the request with "
                f"HTTP {status} ({_error_message(response)}); {key_note}"
            )
        if status == 429 or status >= 500:
            raise _PromptFailedError(
                f"HTTP {status}: {_error_message(response)}",
                status=status,
                transient=True,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if status >= 400:
            raise _PromptFailedError(f"HTTP {status}: {_error_message(response)}", status=status)
        return _answer_text(response, self.api_style)


async def onboard_endpoint_async(
    name: str,
    base_url: str,
    prompts: Sequence[RepresentativePrompt],
    *,
    upstream_model: str | None = None,
    api_key_env: str | None = None,
    api_style: str = "chat",
    concurrency: int = 8,
    timeout: float = 60.0,
    retries: int = 3,
    backoff: float = 0.5,
    cache_path: str | Path | None = None,
    cache: AnswerStore | None = None,
    progress: bool = True,
    max_tokens: int = 512,
    temperature: float = 0.0,
    graders: Mapping[str, Grader] | None = None,
    skip_ungradeable_tasks: bool = False,
    max_failure_rate: float = 0.1,
    max_ungradeable_rate: float = 0.5,
    on_progress: Callable[[int, int], None] | None = None,
    endpoint_policy: EndpointPolicy | None = None,
) -> OnboardingResult:
    """Ask an endpoint every representative prompt, grade the answers, return the scores.

    ``name`` is the pool's name for the model and ``upstream_model`` the ``model`` field sent to
    the endpoint (default: ``name``). ``graders`` maps task glob patterns to graders ahead of
    ``grader_for``. Prompts whose reference cannot be used are skipped (missing, not 0); a task
    none of whose prompts can be graded (MBPP without unit tests) is an error unless
    ``skip_ungradeable_tasks``. Answers are cached as they arrive in ``cache`` (a registry's
    ``answer_cache``) or else in the file ``cache_path`` (default ``<cache dir>/answers.sqlite3``),
    so a run that is interrupted and started again asks only the prompts still unanswered.
    ``on_progress(done, total)`` is called as prompts complete. Before the first request the
    endpoint's host is checked against ``endpoint_policy`` (default: the default policy, which
    refuses link-local and cloud metadata hosts).

    Raises OnboardingError when the endpoint is refused by that policy, cannot be reached
    (after the first prompt's retries), rejects the key (401/403), leaves more than
    ``max_failure_rate`` of the prompts unanswered, or gives answers of which more than
    ``max_ungradeable_rate`` are empty or hold nothing gradeable (then the cached answers of
    this model and endpoint are discarded).
    """
    started = time.perf_counter()
    _check_arguments(
        prompts, api_style, concurrency, timeout, retries, backoff, max_tokens, temperature,
        max_failure_rate, max_ungradeable_rate,
    )  # fmt: skip
    endpoint = endpoint_base_url(base_url)
    # Resolving the host name blocks: off the event loop.
    policy = endpoint_policy or EndpointPolicy()
    await asyncio.to_thread(policy.check, endpoint, OnboardingError)
    url = completion_url(endpoint, api_style)
    headers = {"content-type": "application/json"}
    if api_key_env:
        api_key = os.environ.get(api_key_env, "")
        if not api_key.strip():
            raise OnboardingError(
                f"environment variable {api_key_env} (the API key of model {name!r}) is not set"
            )
        headers["authorization"] = f"Bearer {api_key}"
    plans, skipped = _plan(prompts, graders, skip_ungradeable_tasks)
    upstream = upstream_model or name
    payload = {"model": upstream, "max_tokens": max_tokens, "temperature": temperature}
    settings = {"api_style": api_style, **payload}
    with _answer_store(cache, cache_path) as store:
        pairs = [(p.prompt.prompt_id, p.prompt.text) for p in plans]
        cached = store.get_many(name, endpoint, pairs, settings)
        run = _Run(name, endpoint, url, plans, store, settings, progress, on_progress)
        missing = [p for p in plans if p.prompt.prompt_id not in cached]
        session = _Session(
            name, url, payload, api_style, api_key_env, retries, backoff, max(5, concurrency)
        )
        try:
            for plan in plans:
                if plan.prompt.prompt_id in cached:
                    await run.record(plan, cached[plan.prompt.prompt_id], from_cache=True)
            if missing:
                limits = httpx.Limits(
                    max_connections=concurrency, max_keepalive_connections=concurrency
                )
                async with httpx.AsyncClient(
                    timeout=httpx.Timeout(timeout), headers=headers, limits=limits
                ) as client:
                    await run.fetch_all(client, session, missing, concurrency)
        finally:
            run.close_progress()
        return run.finish(skipped, max_failure_rate, max_ungradeable_rate, started)


@contextlib.contextmanager
def _answer_store(
    cache: AnswerStore | None, cache_path: str | Path | None
) -> Iterator[AnswerStore]:
    """The given cache (left open), or the cache file ``cache_path`` opened for the run."""
    if cache is not None:
        yield cache
        return
    with AnswerCache(cache_path or default_cache_dir() / "answers.sqlite3") as opened:
        yield opened


class _Run:
    """The answers, grades and failures collected during one onboarding run."""

    def __init__(
        self,
        name: str,
        endpoint: str,
        url: str,
        plans: list[_Plan],
        cache: AnswerStore,
        settings: dict,
        progress: bool,
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        from tqdm import tqdm

        self.name = name
        self.endpoint = endpoint
        self.url = url
        self.plans = plans
        self.cache = cache
        self.settings = settings
        self.on_progress = on_progress
        self.answers: dict[str, str] = {}
        self.scores: dict[str, float] = {}
        self.ungradeable: list[str] = []
        self.failures: list[PromptFailure] = []
        self.fetched = 0
        self.from_cache = 0
        self.answer_seconds: list[float] = []
        self.completed = 0
        self.bar = tqdm(
            total=len(plans),
            desc=f"onboarding {name}",
            unit="prompt",
            disable=not progress,
            file=sys.stderr,
        )

    def close_progress(self) -> None:
        """Close the progress bar."""
        self.bar.close()

    def _advance(self) -> None:
        self.completed += 1
        self.bar.update(1)
        if self.on_progress is not None:
            self.on_progress(self.completed, len(self.plans))

    async def record(self, plan: _Plan, answer: str, *, from_cache: bool) -> None:
        """Keep (and cache) one answer, grade it, and check the endpoint is not answering junk."""
        prompt = plan.prompt
        if from_cache:
            self.from_cache += 1
        else:
            self.fetched += 1
            self.cache.put(
                self.name, self.endpoint, prompt.prompt_id, prompt.text, answer, self.settings
            )
        self.answers[prompt.prompt_id] = answer
        try:
            score, gradeable = await asyncio.to_thread(_grade, plan, answer)
        except GradingError as exc:
            self.failures.append(PromptFailure(prompt.prompt_id, f"grading: {exc}"))
        else:
            self.scores[prompt.prompt_id] = score
            if not gradeable:
                self.ungradeable.append(prompt.prompt_id)
        self._advance()
        if len(self.answers) >= _EARLY_GARBAGE_CHECK and len(self.ungradeable) == len(self.answers):
            self._garbage_error()

    def fail(self, plan: _Plan, reason: str) -> None:
        """Record a prompt that got no answer."""
        self.failures.append(PromptFailure(plan.prompt.prompt_id, reason))
        self._advance()

    async def timed(self, asking: Awaitable[str]) -> str:
        """An answer, its seconds (retries included) kept for the endpoint's latency."""
        started = time.perf_counter()
        answer = await asking
        self.answer_seconds.append(time.perf_counter() - started)
        return answer

    async def fetch_all(
        self, client: httpx.AsyncClient, session: _Session, missing: list[_Plan], concurrency: int
    ) -> None:
        """Ask the first prompt alone (an unreachable endpoint fails fast), then the rest."""
        first, rest = missing[0], missing[1:]
        try:
            answer = await self.timed(session.ask(client, first.prompt))
        except _PromptFailedError as exc:
            if exc.connection:
                raise OnboardingError(
                    f"endpoint {self.url} of model {self.name!r} is unreachable: {exc.reason}"
                ) from None
            if exc.status is None or exc.status == 429 or exc.status >= 500:
                raise OnboardingError(
                    f"endpoint {self.url} of model {self.name!r} failed on the first prompt: "
                    f"{exc.reason}"
                ) from None
            raise OnboardingError(
                f"endpoint {self.url} of model {self.name!r} failed on the first prompt: "
                f"{exc.reason}; check the base URL (it ends in /v1), the model name and api_style"
            ) from None
        await self.record(first, answer, from_cache=False)
        semaphore = asyncio.Semaphore(concurrency)

        async def one(plan: _Plan) -> None:
            async with semaphore:
                try:
                    answer = await self.timed(session.ask(client, plan.prompt))
                except _PromptFailedError as exc:
                    self.fail(plan, exc.reason)
                    session.consecutive_failures += 1
                    if session.consecutive_failures >= session.fail_fast_after:
                        raise OnboardingError(
                            f"endpoint {self.url} of model {self.name!r} stopped answering: "
                            f"{session.consecutive_failures} prompts in a row failed (last: "
                            f"{exc.reason}); the {len(self.answers)} answers received are cached, "
                            "run again to resume"
                        ) from None
                    return
                session.consecutive_failures = 0
                await self.record(plan, answer, from_cache=False)

        try:
            async with asyncio.TaskGroup() as group:
                for plan in rest:
                    group.create_task(one(plan))
        except* OnboardingError as errors:
            raise errors.exceptions[0] from None

    def _garbage_error(self) -> None:
        examples = [self.answers[p][:60] for p in self.ungradeable[:3]]
        removed = self.cache.clear(self.name, self.endpoint)
        raise OnboardingError(
            f"endpoint {self.url} of model {self.name!r} gives garbage: "
            f"{len(self.ungradeable)} of {len(self.answers)} answers are empty or hold no "
            f"gradeable answer (e.g. {examples}); its {removed} cached answers were discarded"
        )

    def finish(
        self,
        skipped: dict[str, str],
        max_failure_rate: float,
        max_ungradeable_rate: float,
        started: float,
    ) -> OnboardingResult:
        """Check failure and garbage rates and build the result."""
        if len(self.failures) > max_failure_rate * len(self.plans):
            first = self.failures[0]
            raise OnboardingError(
                f"endpoint {self.url} of model {self.name!r}: {len(self.failures)} of "
                f"{len(self.plans)} prompts got no usable answer (first: prompt "
                f"{first.prompt_id!r}: {first.reason}); answers received are cached, run again "
                "to resume"
            )
        if self.answers and len(self.ungradeable) > max_ungradeable_rate * len(self.answers):
            self._garbage_error()
        if not self.scores:
            raise OnboardingError(f"model {self.name!r}: no answer could be graded")
        totals: dict[str, list[float]] = {}
        for plan in self.plans:
            score = self.scores.get(plan.prompt.prompt_id)
            if score is not None:
                totals.setdefault(plan.prompt.task, []).append(score)
        per_task = {task: (sum(v) / len(v), len(v)) for task, v in totals.items()}
        return OnboardingResult(
            model=self.name,
            endpoint=self.endpoint,
            scores=dict(self.scores),
            per_task_accuracy=per_task,
            answers_fetched=self.fetched,
            answers_from_cache=self.from_cache,
            failures=list(self.failures),
            skipped=dict(skipped),
            ungradeable=list(self.ungradeable),
            answers=dict(self.answers),
            elapsed_s=time.perf_counter() - started,
            median_answer_s=statistics.median(self.answer_seconds) if self.answer_seconds else None,
        )


def _grade(plan: _Plan, answer: str) -> tuple[float, bool]:
    """(score, whether the answer held something gradeable); checks the grader's output."""
    prompt, grader = plan.prompt, plan.grader
    gradeable = bool(answer.strip())
    if gradeable and isinstance(grader, BaseGrader):
        gradeable = grader.extract(answer, prompt) is not None
    raw = grader.grade(answer, prompt.reference, prompt)
    try:
        score = float(raw)
    except (TypeError, ValueError):
        score = math.nan
    if not 0.0 <= score <= 1.0:
        raise GradingError(f"{grader!r} returned {raw!r}, not a score in [0, 1]")
    return score, gradeable


def _blocking_form(
    coroutine_function: Callable[_P, Coroutine[Any, Any, _R]],
) -> Callable[_P, _R]:
    """A function taking the same arguments that runs the coroutine to completion and returns.

    Named after the coroutine function without its ``_async`` suffix; it refuses to run inside
    an event loop, where it would block every other task.
    """
    async_name = coroutine_function.__name__
    blocking_name = async_name.removesuffix("_async")

    @functools.wraps(coroutine_function)
    def run_to_completion(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                f"{blocking_name}() blocks and cannot run inside an event loop; "
                f"await {async_name}() instead"
            )
        return asyncio.run(coroutine_function(*args, **kwargs))

    run_to_completion.__name__ = run_to_completion.__qualname__ = blocking_name
    run_to_completion.__doc__ = (
        f"Blocking form of ``{async_name}`` (same arguments), for the CLI and scripts."
    )
    return run_to_completion


onboard_endpoint = _blocking_form(onboard_endpoint_async)
