"""`uniroute models`: add, list, show, remove, enable, disable, re-price and update (capabilities
and token limits of) pool models."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uniroute.cli.arg_types import int_at_least, positive_float
from uniroute.cli.pool_options import (
    add_cost_arguments,
    add_location_arguments,
    artifact_given,
    artifact_path,
    parse_cost,
    registry_path,
)
from uniroute.errors import ModelExistsError, RegistryError

if TYPE_CHECKING:
    from uniroute.data.representative import RepresentativePrompt

# How many unknown prompt ids of a scores file are named in the report.
_SHOWN_UNKNOWN_IDS = 5


def capability_list(text: str) -> tuple[str, ...]:
    """``--capabilities``: comma-separated names of ``CAPABILITIES`` ("" declares none)."""
    from uniroute.registry.records import CAPABILITIES

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CAPABILITIES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown capability {unknown[0]!r}; known: {', '.join(CAPABILITIES)} "
            '(comma-separated, or "" for none)'
        )
    return tuple(sorted(set(names)))


def token_limit(text: str) -> int | None:
    """``--context-window`` / ``--max-output-tokens``: a whole number of tokens >= 1, or
    ``none`` (not known, so not limited)."""
    if text.strip().lower() == "none":
        return None
    return int_at_least(1)(text)


def _add_capability_arguments(parser: argparse.ArgumentParser, *, clearable: bool) -> None:
    none = " ('none': not known)" if clearable else ""
    # Updating, an option left out keeps its value: it is then absent from the namespace.
    default = argparse.SUPPRESS if clearable else None
    parser.add_argument(
        "--capabilities",
        type=capability_list,
        default=default,
        help="what the model can do beyond text, comma-separated: tools, vision, json "
        '("" for none); routing sends requests that need one only to models that have it',
    )
    parser.add_argument(
        "--context-window",
        type=token_limit if clearable else int_at_least(1),
        default=default,
        help=f"the model's context window in tokens{none}; longer requests skip it",
    )
    parser.add_argument(
        "--max-output-tokens",
        type=token_limit if clearable else int_at_least(1),
        default=default,
        help=f"the longest answer the model gives, in tokens{none}",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `models` sub-command and its actions."""
    parser = subparsers.add_parser("models", help="manage the model pool in the registry")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    parser.set_defaults(func=lambda args: _usage(parser))

    add = actions.add_parser(
        "add",
        help="add a model from its scores on the representative prompts, or from its endpoint",
        description=(
            "Add a model to the pool. With --scores, its scores on the representative prompts "
            "(CSV or JSONL with prompt_id and score, and optionally answer: the model's raw "
            "answer) are read; with --endpoint alone, every representative prompt is sent to the "
            "endpoint, the answers are graded and recorded. The model is routable as soon as the "
            "command returns."
        ),
    )
    add.add_argument("name", help="name of the model in the pool")
    add_cost_arguments(add)
    add.add_argument(
        "--scores", type=Path, help="CSV/JSONL file of prompt_id, score (and optionally answer)"
    )
    add.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. https://host/v1")
    add.add_argument(
        "--api-key-env", help="NAME of the environment variable holding the endpoint's API key"
    )
    add.add_argument(
        "--upstream-model",
        help="model name the endpoint expects, when it differs from NAME (stored; the gateway "
        "sends it upstream and still reports NAME to clients)",
    )
    add.add_argument("--api-style", choices=("chat", "completions"), default="chat")
    add.add_argument(
        "--concurrency", type=int_at_least(1), default=8, help="parallel requests (default 8)"
    )
    add.add_argument("--timeout", type=positive_float, default=60.0, help="seconds per request")
    add.add_argument("--retries", type=int_at_least(0), default=3, help="retries per prompt")
    add.add_argument(
        "--answer-cache",
        type=Path,
        help="cache the endpoint's answers in this file instead of the registry (a run that is "
        "interrupted and started again asks only the prompts still unanswered, either way)",
    )
    add.add_argument(
        "--skip-ungradeable-tasks",
        action="store_true",
        help="skip tasks none of whose prompts can be graded (e.g. coding tasks without unit "
        "tests) instead of failing; their scores stay missing",
    )
    _add_capability_arguments(add, clearable=False)
    add.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    add.add_argument("--disabled", action="store_true", help="add it disabled")
    add.add_argument("--replace", action="store_true", help="replace a model of the same name")
    add.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_location_arguments(add)
    add.set_defaults(func=run_add)

    listing = actions.add_parser("list", help="list the models of the pool")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_location_arguments(listing)
    listing.set_defaults(func=run_list)

    show = actions.add_parser("show", help="show one model (price, scores, accuracy per task)")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON")
    add_location_arguments(show)
    show.set_defaults(func=run_show)

    for action, help_text in (
        ("remove", "delete a model with its scores"),
        ("disable", "keep a model but stop routing to it"),
        ("enable", "route to a disabled model again"),
    ):
        sub = actions.add_parser(action, help=help_text)
        sub.add_argument("name")
        add_location_arguments(sub, artifact=False)
        sub.set_defaults(func=run_change)

    price = actions.add_parser("set-cost", help="change a model's price")
    price.add_argument("name")
    add_cost_arguments(price)
    add_location_arguments(price)  # the artifact, when given, costs a token price per query
    price.set_defaults(func=run_set_cost)

    update = actions.add_parser(
        "update",
        help="change a model's capabilities and token limits",
        description='Change what a model can do (--capabilities tools,vision,json; "" clears '
        "them) and its token limits; an option left out keeps its value.",
    )
    update.add_argument("name")
    _add_capability_arguments(update, clearable=True)
    add_location_arguments(update, artifact=False)
    update.set_defaults(func=run_update)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_add(args: argparse.Namespace) -> int:
    """Add a model from a scores file or by onboarding its endpoint."""
    started = time.perf_counter()
    from uniroute.artifact import Artifact
    from uniroute.deployment import Router
    from uniroute.deployment.pool_changes import add_scored_model, check_can_add, onboard_model
    from uniroute.registry import ModelRecord, read_model_file

    if args.scores is None and args.endpoint is None:
        raise RegistryError("give --scores FILE, or --endpoint URL to query the model")
    cost = parse_cost(args)
    # Every field is checked before anything is read or any endpoint is asked.
    record = ModelRecord(
        name=args.name,
        cost=cost,
        endpoint=args.endpoint,
        upstream_model=args.upstream_model,
        api_key_env=args.api_key_env,
        tags=tuple(args.tag),
        enabled=not args.disabled,
        capabilities=args.capabilities or (),
        context_window=args.context_window,
        max_output_tokens=args.max_output_tokens,
    )
    # Adding a model never embeds a prompt: the encoder is not even read.
    artifact = Artifact.load(artifact_path(args), lazy_encoder=True)
    router = Router.load(artifact, registry_path(args, must_exist=False))
    try:  # before a file is read or an endpoint is asked
        check_can_add(router, args.name, args.replace)
    except ModelExistsError:
        raise ModelExistsError(
            f"model {args.name!r} is already in {router.registry.path}; use --replace or remove it"
        ) from None
    if args.scores is not None:
        scores_file = read_model_file(args.scores)
        added = add_scored_model(
            router,
            record,
            scores_file.scores,
            answers=scores_file.answers,
            replace=args.replace,
            source=str(args.scores),
        )
    else:
        onboarded = onboard_model(
            router,
            record,
            replace=args.replace,
            cache_path=args.answer_cache,
            progress=not args.no_progress,
            api_style=args.api_style,
            concurrency=args.concurrency,
            timeout=args.timeout,
            retries=args.retries,
            skip_ungradeable_tasks=args.skip_ungradeable_tasks,
            # Declared capabilities (even none, with --capabilities "") are not probed.
            probe_capabilities=False if args.capabilities is not None else None,
        )
        print(onboarded.result.summary())
        if onboarded.probes is not None:
            print(f"  {onboarded.probes.summary()}")
        if onboarded.result.skipped:
            print(describe_skipped(artifact.representative_prompts, onboarded.result.skipped))
        added = onboarded.added
    elapsed = time.perf_counter() - started
    print(
        f"added {args.name!r}: scores on {added.n_matched} of {added.n_representative} "
        f"representative prompts, price {cost.describe()} "
        f"(~{cost.per_query_cost(router.mean_input_tokens):.6g} per query)"
    )
    from uniroute.registry.costs import price_warning

    pool = router.snapshot.pool
    warning = price_warning(
        args.name,
        cost.per_query_cost(router.mean_input_tokens),
        dict(zip(pool.names, pool.costs.tolist(), strict=True)),
    )
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if added.n_answers:
        print(f"  {describe_answers(added.n_answers, added.n_answer_keys, added.n_representative)}")
    if record.upstream_model is not None:
        print(f"  requests to {record.endpoint} name the model {record.upstream_model!r}")
    print(f"  {describe_capabilities(added.record.to_dict())}")
    if added.unknown_ids:
        shown = ", ".join(added.unknown_ids[:_SHOWN_UNKNOWN_IDS])
        more = " ..." if len(added.unknown_ids) > _SHOWN_UNKNOWN_IDS else ""
        print(
            f"  ignored {len(added.unknown_ids)} prompt id(s) that are not representative prompts: "
            f"{shown}{more}"
        )
    for warning in added.evidence_warnings:
        print(f"  warning: {warning}")
    snapshot = router.snapshot
    state = "routable now" if not args.disabled else "added disabled (not routed to)"
    print(
        f"{state}: {elapsed:.2f} s from start to routable; pool has {len(snapshot.pool)} "
        "enabled models"
    )
    if snapshot.policy_stale_reason is not None:
        print(f"warning: default policy is stale: {snapshot.policy_stale_reason}")
    return 0


def describe_capabilities(record: Mapping[str, Any]) -> str:
    """One line: a record's capabilities and token limits."""
    capabilities = ", ".join(record.get("capabilities") or ()) or "none declared"

    def tokens(value: int | None) -> str:
        return "-" if value is None else f"{value:,} tokens"

    return (
        f"capabilities {capabilities}; context window {tokens(record.get('context_window'))}; "
        f"max output {tokens(record.get('max_output_tokens'))}"
    )


def describe_answers(n_answers: int, n_keys: int, n_representative: int | None) -> str:
    """One line: how many representative prompts have a recorded answer, and with a key."""
    of = "" if n_representative is None else f" of {n_representative}"
    return (
        f"{n_answers}{of} representative prompts have a recorded answer "
        f"({n_keys} with a canonical key)"
    )


def describe_skipped(prompts: Sequence[RepresentativePrompt], skipped: Mapping[str, str]) -> str:
    """Which tasks onboarding skipped whole, other skipped prompts, and how many prompts remain."""
    per_task = Counter(prompt.task for prompt in prompts)
    skipped_per_task = Counter(prompt.task for prompt in prompts if prompt.prompt_id in skipped)
    whole = sorted(task for task, n in skipped_per_task.items() if n == per_task[task])
    parts = []
    if whole:
        listed = ", ".join(f"{task} ({per_task[task]} prompts)" for task in whole)
        parts.append(f"skipped task(s) that cannot be graded: {listed}")
    partly = sum(n for task, n in skipped_per_task.items() if task not in whole)
    if partly:
        parts.append(f"skipped {partly} more prompt(s) without a usable reference")
    left = len(prompts) - sum(skipped_per_task.values())
    parts.append(f"{left} of {len(prompts)} representative prompts left to grade")
    return "; ".join(parts)


def run_list(args: argparse.Namespace) -> int:
    """Print every model of the registry."""
    from uniroute.registry import Registry

    with Registry(registry_path(args)) as registry:
        records = registry.list_models()
        counts = registry.score_counts()
        policy = registry.get_policy()
    if args.json:
        rows = [{**r.to_dict(), "n_scores": counts.get(r.name, 0)} for r in records]
        print(json.dumps({"models": rows, "policy": policy and policy.to_dict()}, indent=2))
        return 0
    if not records:
        print("the registry has no models")
        return 0
    width = max(len(r.name) for r in records)
    print(f"{'model':<{width}}  enabled  {'price':<28} scores  {'capabilities':<16} endpoint")
    for r in records:
        abilities = ",".join(r.capabilities) or "-"
        if r.context_window is not None:
            abilities += f" ({_short_tokens(r.context_window)})"
        print(
            f"{r.name:<{width}}  {'yes' if r.enabled else 'no':<7}  {r.cost.describe():<28} "
            f"{counts.get(r.name, 0):>6}  {abilities:<16} {r.endpoint or '-'}"
        )
    if policy is not None:
        print(f"default policy: lambda={policy.lam:.6g} for {policy.target.describe()}")
    return 0


def _short_tokens(value: int) -> str:
    """A token count in a narrow column: 8192 -> 8k, 128000 -> 128k, 1000000 -> 1M."""
    if value >= 1_000_000 and value % 1_000_000 == 0:
        return f"{value // 1_000_000}M"
    if value >= 1000:
        return f"{round(value / 1000)}k"
    return str(value)


def run_show(args: argparse.Namespace) -> int:
    """Print one model's record, scores summary and, with an artifact, accuracy per task."""
    from uniroute.registry import Registry

    with Registry(registry_path(args)) as registry:
        record = registry.get_model(args.name)
        scores = registry.get_scores(args.name)
        n_answers, n_answer_keys = registry.answer_count(args.name)
    info = {
        **record.to_dict(),
        "n_scores": len(scores),
        "n_answers": n_answers,
        "n_answer_keys": n_answer_keys,
    }
    info["mean_score"] = sum(scores.values()) / len(scores) if scores else None
    if artifact_given(args):
        from uniroute.artifact import Artifact
        from uniroute.deployment.evidence import cluster_evidence, task_warnings

        artifact = Artifact.load(artifact_path(args), lazy_encoder=True)
        info["mean_input_tokens"] = artifact_input_tokens(artifact)
        info["cost_per_query"] = record.cost.per_query_cost(info["mean_input_tokens"])
        per_task: dict[str, list[float]] = {}
        for prompt in artifact.representative_prompts:
            if prompt.prompt_id in scores:
                per_task.setdefault(prompt.task, []).append(scores[prompt.prompt_id])
        info["accuracy_per_task"] = {
            task: {"accuracy": sum(v) / len(v), "n": len(v)} for task, v in sorted(per_task.items())
        }
        info["representative_prompts"] = len(artifact.representative_prompts)
        clusters = cluster_evidence(artifact, scores)
        if clusters:
            info["clusters"] = [row.to_dict() for row in clusters]
        info["evidence_warnings"] = task_warnings(artifact, scores)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{record.name}  ({'enabled' if record.enabled else 'disabled'})")
    print(f"  price       {record.cost.describe()}")
    print(f"  per query   {describe_query_cost(record.cost, info.get('mean_input_tokens'))}")
    print(f"  endpoint    {record.endpoint or '-'}")
    if record.endpoint:
        upstream = record.upstream_model or f"{record.name} (the pool name)"
        print(f"  upstream    {upstream}")
    print(f"  api key env {record.api_key_env or '-'}")
    print(f"  tags        {', '.join(record.tags) or '-'}")
    print(f"  capable of  {', '.join(record.capabilities) or '- (none declared)'}")
    for label, value in (
        ("context", record.context_window),
        ("max output", record.max_output_tokens),
    ):
        print(f"  {label:<11} {'-' if value is None else f'{value:,} tokens'}")
    mean = "-" if info["mean_score"] is None else f"{info['mean_score']:.3f}"
    print(f"  scores      {len(scores)} (mean {mean})")
    for task, entry in info.get("accuracy_per_task", {}).items():
        print(f"    {task:<28} {entry['accuracy']:6.1%}  ({entry['n']} prompts)")
    n_rep = info.get("representative_prompts")
    print(f"  answers     {describe_answers(n_answers, n_answer_keys, n_rep)}")
    if info.get("clusters"):
        print("  estimated error per cluster (evidence: scored / representative prompts)")
        for row in info["clusters"]:
            spread = "" if row["std"] is None else f" ± {1.96 * row['std']:.3f}"
            flag = ""
            if row["n_prompts"] == 0:
                flag = "  no representative prompt here: predicted from other clusters"
            elif row["n_scored"] == 0:
                flag = "  no score here: predicted from other clusters"
            print(
                f"    cluster {row['cluster']:>2}  {row['estimated_error']:.3f}{spread:<9}  "
                f"{row['n_scored']:>4}/{row['n_prompts']:<4} mostly {row['main_task']}{flag}"
            )
    for warning in info.get("evidence_warnings", []):
        print(f"  warning: {warning}")
    print(f"  added {record.created_at}, updated {record.updated_at}")
    return 0


def run_change(args: argparse.Namespace) -> int:
    """remove / disable / enable one model (a registry change: no artifact is read)."""
    from uniroute.deployment.pool_changes import remove_model, set_enabled
    from uniroute.registry import Registry

    with Registry(registry_path(args)) as registry:
        if args.action == "remove":
            remove_model(registry, args.name)
            done = "removed"
        else:
            set_enabled(registry, args.name, args.action == "enable")
            done = f"{args.action}d"
        enabled = len(registry.list_models(enabled_only=True))
    print(f"{done} {args.name!r}; the pool has {enabled} enabled models")
    return 0


def run_set_cost(args: argparse.Namespace) -> int:
    """Change one model's price (a registry change: no artifact is read)."""
    from uniroute.deployment.pool_changes import set_cost
    from uniroute.registry import Registry

    cost = parse_cost(args)
    tokens = None
    if artifact_given(args):
        from uniroute.artifact import Artifact

        tokens = artifact_input_tokens(Artifact.load(artifact_path(args), lazy_encoder=True))
    with Registry(registry_path(args)) as registry:
        record = set_cost(registry, args.name, cost)
        others = {
            other.name: other.cost.per_query_cost(tokens or 0.0)
            for other in registry.list_models(enabled_only=True)
            if tokens is not None or not other.cost.is_per_token
        }
    per_query = describe_query_cost(cost, tokens)
    print(f"{record.name!r} now costs {record.cost.describe()}, {per_query}")
    if tokens is not None or not cost.is_per_token:
        from uniroute.registry.costs import price_warning

        warning = price_warning(record.name, cost.per_query_cost(tokens or 0.0), others)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def artifact_input_tokens(artifact: Any) -> float:
    """The mean estimated length of an artifact's representative prompts, in tokens: what a
    token price is turned into a cost per query with."""
    from uniroute.registry.costs import mean_input_tokens

    return mean_input_tokens(p.text for p in artifact.representative_prompts)


def describe_query_cost(cost: Any, mean_tokens: float | None) -> str:
    """A price's cost per query, or what is needed to know it."""
    if not cost.is_per_token:
        return f"{cost.per_query:.6g} per query"
    if mean_tokens is None:
        return "per query: give --artifact (a token price is costed on its representative prompts)"
    return f"~{cost.per_query_cost(mean_tokens):.6g} per query (~{mean_tokens:.0f} input tokens)"


def run_update(args: argparse.Namespace) -> int:
    """Change one model's capabilities and token limits (a registry change: no artifact read)."""
    from uniroute.deployment.pool_changes import set_capabilities
    from uniroute.registry import Registry

    # The options are left unset when not given (argparse.SUPPRESS): "none" given clears a limit.
    keys = ("capabilities", "context_window", "max_output_tokens")
    changes = {key: getattr(args, key) for key in keys if hasattr(args, key)}
    if not changes:
        raise RegistryError(
            "nothing to update: give --capabilities, --context-window or --max-output-tokens"
        )
    with Registry(registry_path(args)) as registry:
        record = set_capabilities(registry, args.name, **changes)
    print(f"{record.name!r}: {describe_capabilities(record.to_dict())}")
    return 0
