"""`uniroute eval`: repeated trials on unseen test LLMs; writes results and deferral curves."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from uniroute.cli.arg_types import check_output_path, int_at_least, json_object, positive_float

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from uniroute.data.dataset import RoutingDataset
    from uniroute.evaluation.promises import Promise
    from uniroute.evaluation.trials import EvaluationRun, TrialOutcome
    from uniroute.pool import Pool
    from uniroute.routers.base import RouterEstimator

#: The routers evaluated by default; ``uniroute-verify`` needs recorded answers, so it is asked for.
DEFAULT_ROUTERS = ("uniroute-kmeans", "uniroute-learned", "knn", "zero", "mlp", "oracle", "random")
ALL_ROUTERS = (*DEFAULT_ROUTERS, "uniroute-verify")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` sub-command."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate routers on unseen test LLMs over repeated trials",
        description=(
            "Split the LLMs into training and unseen test LLMs and the prompts into "
            "train/validation/test, fit each router on the training LLMs, onboard the test LLMs "
            "from their validation scores only, and report deferral-curve metrics over trials."
        ),
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="a data file, or a folder whose files are all read"
    )
    parser.add_argument(
        "--format",
        required=True,
        choices=("routerbench", "routerdc", "embedllm", "long"),
        help="data format",
    )
    parser.add_argument(
        "--routers",
        default=",".join(DEFAULT_ROUTERS),
        help=(
            f"comma-separated, from {','.join(ALL_ROUTERS)} (uniroute-verify needs data with "
            "recorded answers); a UniRoute router may carry its Psi "
            "prior, NAME:population or NAME:own-mean (e.g. uniroute-kmeans,uniroute-kmeans:own-mean"
            " evaluates both on the same splits; results are keyed by that label)"
        ),
    )
    parser.add_argument(
        "--tasks",
        metavar="LIST",
        help="evaluate on these tasks' prompts only, comma-separated (e.g. arc-challenge)",
    )
    parser.add_argument("--encoder", default="minilm", help="prompt encoder: minilm or tfidf")
    parser.add_argument(
        "--costs", type=Path, help="JSON map {model: cost per query}; overrides recorded costs"
    )
    parser.add_argument(
        "--test-models",
        type=int_at_least(1),
        required=True,
        help="how many LLMs are held out as unseen",
    )
    parser.add_argument(
        "--trials", type=int_at_least(1), default=20, help="number of trials (new splits each)"
    )
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the whole run")
    parser.add_argument(
        "--split",
        type=_parse_split,
        default="0.6,0.1,0.3",
        help="train,validation,test fractions of the prompts",
    )
    parser.add_argument(
        "--router-params",
        default="{}",
        help='JSON {router: {param: value}}, e.g. \'{"uniroute-kmeans": {"n_clusters": 20}}\'',
    )
    parser.add_argument(
        "--onboard-prompts",
        metavar="LIST",
        help=(
            "also score every router with the unseen LLMs described from only N representative "
            "prompts, e.g. 10,25,50,100,all (a seeded subset per trial, the same for all routers)"
        ),
    )
    parser.add_argument(
        "--missing-task",
        metavar="TASK",
        help=(
            "also score every router with the unseen LLMs' scores on one task's representative "
            "prompts removed: a task name, or 'each' (one task drawn per trial)"
        ),
    )
    parser.add_argument(
        "--calibrate-quality",
        type=float,
        metavar="Q",
        help=(
            "per trial and router, calibrate lambda on the representative prompts to expected "
            "quality >= Q with the unseen pool, and report the realised test quality"
        ),
    )
    parser.add_argument(
        "--calibrate-cost",
        type=float,
        metavar="C",
        help="the same for expected cost per query <= C",
    )
    parser.add_argument("--out", type=Path, default=Path("out/eval"), help="output folder")
    parser.add_argument(
        "--cache-dir", type=Path, help="embedding cache folder (default: UNIROUTE_CACHE or .cache)"
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help=(
            "run the trials on a Dask cluster (pip install 'uniroute[dask]'): tcp://HOST:PORT of "
            "a running scheduler, or local:N to start N local worker processes; the results equal "
            "the serial run's for the same seed (default: the trials run one after another here)"
        ),
    )
    parser.add_argument(
        "--scheduler-timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="with --scheduler: seconds to wait for the scheduler to answer (default 10)",
    )
    parser.set_defaults(func=run)


def _parse_split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--split {text!r}: expected three numbers like 0.6,0.1,0.3"
        ) from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(
            f"--split {text!r}: expected three fractions, got {len(parts)}"
        )
    if not all(math.isfinite(x) and x > 0 for x in parts):
        raise argparse.ArgumentTypeError(
            f"--split {text!r}: every fraction must be a number > 0 (no split may be empty)"
        )
    if not math.isclose(sum(parts), 1.0, abs_tol=1e-9):
        raise argparse.ArgumentTypeError(
            f"--split {text!r}: the fractions must sum to 1, not {sum(parts):g}"
        )
    return parts[0], parts[1], parts[2]


def _only_tasks(dataset: RoutingDataset, text: str) -> RoutingDataset:
    """The dataset restricted to the prompts of the tasks named in ``--tasks``."""
    import numpy as np

    from uniroute.errors import DataError

    wanted = [t.strip() for t in text.split(",") if t.strip()]
    present = sorted(set(dataset.tasks.tolist()))
    unknown = [t for t in wanted if t not in present]
    if not wanted or unknown:
        raise DataError(
            f"--tasks {text!r}: unknown task(s) {unknown or '(none given)'}; the data has {present}"
        )
    return dataset.subset(np.flatnonzero(np.isin(dataset.tasks, wanted)))


def product_calibrator(
    estimator: RouterEstimator, X_rep: np.ndarray, pool: Pool, kind: str, value: float
) -> Promise:
    """Solve a target as the deployed router does (``deployment.snapshot.calibrate_pool``):
    errors cross-fitted over ``CALIBRATION_FOLDS`` folds of the representative prompts
    (``RouterEstimator.cross_fitted_errors``) into ``registry.calibration.solve_target``.

    The evaluation pool has no endpoints, so, as in the product, every model is solved over.
    """
    from uniroute.deployment.snapshot import CALIBRATION_FOLDS
    from uniroute.evaluation.promises import Promise
    from uniroute.registry.calibration import Target, solve_target

    folds = min(CALIBRATION_FOLDS, len(X_rep))
    if folds >= 2:
        errors = estimator.cross_fitted_errors(X_rep, pool, folds=folds, seed=0)
    else:
        folds = 0
        errors = estimator.predict_error(X_rep, pool)
    policy = solve_target(
        errors,
        pool.costs,
        pool.scores,
        list(pool.names),
        Target(kind, value),
        out_of_sample=folds > 0,
        n_folds=folds,
    )
    return Promise(policy.lam, policy.expected_quality, policy.expected_cost)


def run(args: argparse.Namespace) -> int:
    """Load data, run the trials, write and print the results."""
    import contextlib
    import functools

    import numpy as np

    from uniroute.cli.progress import ProgressPrinter
    from uniroute.data.loading import load_dataset
    from uniroute.embeddings.factory import (
        ENCODERS,
        cached,
        encode_in_batches,
        encoder_class,
        make_encoder,
    )
    from uniroute.errors import DataError, RouterError
    from uniroute.evaluation.evidence import evidence_settings, parse_onboard_prompts
    from uniroute.evaluation.specs import VARIANT_SEPARATOR, router_specs
    from uniroute.evaluation.trials import TrialConfig, run_trials
    from uniroute.routers import make_estimator

    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    if not routers:
        raise DataError(f"--routers: no router given; choose from {list(ALL_ROUTERS)}")
    unknown = [r for r in routers if r.partition(VARIANT_SEPARATOR)[0] not in ALL_ROUTERS]
    if unknown:
        raise DataError(f"--routers: unknown router(s) {unknown}; choose from {list(ALL_ROUTERS)}")
    if args.encoder not in ENCODERS:
        raise DataError(
            f"--encoder: unknown encoder {args.encoder!r}; choose from {list(ENCODERS)}"
        )
    # An encoder whose extra is not installed says so (MissingExtraError) before anything else.
    encoder_class(args.encoder)
    router_params = json_object(args.router_params, "--router-params")
    not_objects = sorted(key for key, value in router_params.items() if not isinstance(value, dict))
    if not_objects:
        raise DataError(
            f"--router-params: the value of {not_objects[0]!r} must be a JSON object "
            '{param: value}, as in {"uniroute-kmeans": {"n_clusters": 20}}'
        )
    try:
        specs = router_specs(routers, router_params)
    except RouterError as exc:
        raise DataError(f"--routers: {exc}") from None
    for spec in specs:
        # Built once here, so a bad parameter stops the run before the data is read.
        try:
            make_estimator(spec.name, **spec.params)
        except (TypeError, ValueError) as exc:
            raise DataError(f"--router-params: {spec.label}: {exc}") from None
    if args.scheduler is not None:
        from uniroute.evaluation.distributed import check_scheduler

        check_scheduler(args.scheduler)
    check_output_path(args.out, "--out", directory=True)
    if args.cache_dir is not None:
        check_output_path(args.cache_dir, "--cache-dir", directory=True)
    onboard = [] if args.onboard_prompts is None else parse_onboard_prompts(args.onboard_prompts)
    evidence = evidence_settings(onboard, args.missing_task)
    targets = {}
    if args.calibrate_quality is not None:
        if not 0 <= args.calibrate_quality <= 1:
            raise DataError(f"--calibrate-quality {args.calibrate_quality:g} must lie in [0, 1]")
        targets["quality"] = args.calibrate_quality
    if args.calibrate_cost is not None:
        if not args.calibrate_cost >= 0:
            raise DataError(f"--calibrate-cost {args.calibrate_cost:g} must be >= 0")
        targets["cost"] = args.calibrate_cost

    started = time.perf_counter()
    progress = ProgressPrinter(clock=time.perf_counter, started=started)
    dataset = load_dataset(args.data, args.format, costs=args.costs)
    if args.tasks is not None:
        dataset = _only_tasks(dataset, args.tasks)
    print(dataset.summary(), file=sys.stderr)
    if args.test_models >= dataset.n_models - 1:
        raise DataError(
            f"--test-models {args.test_models}: the data has {dataset.n_models} LLMs; "
            "at least 2 must remain for training"
        )
    if np.unique(dataset.model_costs).size == 1:
        print(
            "warning: every model has the same cost, so the cost axis is degenerate; pass --costs "
            "with real per-model costs",
            file=sys.stderr,
        )

    config = TrialConfig(
        routers=routers,
        test_models=args.test_models,
        trials=args.trials,
        seed=args.seed,
        fractions=args.split,
        router_params=router_params,
        evidence=evidence,
        calibration_targets=targets,
        calibrator=product_calibrator if targets else None,
    )
    fixed_embeddings, encoder_id = None, None
    encoder_needs_fit = args.encoder == "tfidf"
    try:
        if not encoder_needs_fit:
            encoder = cached(make_encoder(args.encoder), args.cache_dir)
            encoder_id = encoder.id
            fixed_embeddings = encode_in_batches(
                encoder, dataset.prompts.tolist(), progress, what=f"prompts with {encoder_id}"
            )

        def report_trial(t: int, outcome: TrialOutcome) -> None:
            areas = ", ".join(f"{name}={m['area']:.3f}" for name, m in outcome.metrics.items())
            progress.line(f"trial {t + 1}/{args.trials}: test LLMs {outcome.test_models}: {areas}")

        # A partial of a module-level function, not a lambda: a cluster pickles it to workers.
        encoder_factory = functools.partial(make_encoder, args.encoder)
        with contextlib.ExitStack() as stack:
            runner: Callable[..., EvaluationRun] = run_trials
            if args.scheduler is not None:
                from uniroute.evaluation.distributed import dask_client, run_trials_on_cluster

                progress.line(f"connecting to the Dask cluster {args.scheduler}")
                client = stack.enter_context(
                    dask_client(args.scheduler, timeout=args.scheduler_timeout)
                )
                runner = functools.partial(run_trials_on_cluster, client)
            run_result = runner(
                dataset,
                encoder_factory,
                config,
                fixed_embeddings=fixed_embeddings,
                encoder_id=encoder_id,
                on_trial=report_trial,
                progress=progress,
            )
    finally:
        progress.close()
    # Imported once there are results to write: the plots load matplotlib, which takes seconds
    # that a refused option or a failed run should not wait for.
    from uniroute.evaluation.plots import average_curves, model_spreads
    from uniroute.evaluation.report import (
        calibration_table_markdown,
        cost_unit,
        evidence_tables_markdown,
        opening_sentence,
        qnc_note,
        results_table_markdown,
        write_results,
    )

    outcomes = run_result.outcomes
    max_costs = [o.max_cost for o in outcomes]
    results = run_result.results
    results["data_path"] = str(args.data)
    results["format"] = args.format
    results["cost_unit"] = cost_unit(args.format, cost_map_given=args.costs is not None)
    results["models"]["max_cost_per_trial"] = max_costs
    results["seconds"] = round(time.perf_counter() - started, 1)
    # Every trial, not one: a single split can rank the routers differently from the mean.
    mean_curves = {
        label: average_curves([o.curves[label] for o in outcomes], max_costs)
        for label in outcomes[0].curves
    }
    spreads = model_spreads([o.model_points for o in outcomes], max_costs)
    paths = write_results(args.out, results, mean_curves, spreads)
    print(opening_sentence(results) + "\n")
    print(results_table_markdown(results))
    print(qnc_note(results) + "\n")
    for extra in (evidence_tables_markdown(results), calibration_table_markdown(results)):
        if extra:
            print(extra)
    print(
        f"wrote {args.out}/{', '.join(path.name for path in paths.values())} in "
        f"{results['seconds']}s",
        file=sys.stderr,
    )
    return 0
