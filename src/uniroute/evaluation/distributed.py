"""The trials of an evaluation on a Dask distributed cluster (the optional ``dask`` extra).

Each trial is one task, :func:`.trials.compute_trial`, sent with its seed drawn up front by
:func:`.trials.trial_seeds`; the dataset (and fixed embeddings) are scattered to the workers
once. Outcomes are put back in trial order before :func:`.trials.aggregate`, so the results
equal the serial run's for the same seed, whichever worker ran which trial and in what order
they finished.

``--scheduler`` takes ``tcp://HOST:PORT`` (an existing scheduler, whose workers have uniroute
installed) or ``local:N`` (a ``LocalCluster`` of N worker processes on this machine, on
loopback, for the length of the run).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from uniroute.data.dataset import RoutingDataset
from uniroute.embeddings.factory import MissingExtraError, ProgressHook
from uniroute.errors import UniRouteError, UsageError
from uniroute.evaluation.trials import (
    EncoderFactory,
    EvaluationRun,
    TrialConfig,
    TrialOutcome,
    aggregate,
    compute_trial,
    thread_counts,
    trial_seeds,
)

log = logging.getLogger(__name__)

#: Seconds to wait for the scheduler to answer before saying it cannot be reached.
CONNECT_TIMEOUT = 10.0
#: The ``--scheduler`` prefix that starts a cluster of local worker processes.
LOCAL_PREFIX = "local:"
#: The scheduler of ``local:N``: no dashboard, its HTTP endpoints on a free loopback port.
LOCAL_SCHEDULER_OPTIONS: dict[str, Any] = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}
#: Schemes ``distributed.Client`` connects over.
SCHEMES = ("tcp://", "tls://", "ws://", "wss://", "inproc://", "ucx://")


class ClusterError(UniRouteError):
    """The Dask cluster could not be reached or a trial failed on it; one line, exit code 1."""

    code = "cluster_failed"


def _import_distributed() -> Any:
    """The ``distributed`` module, or a one-line MissingExtraError naming the extra."""
    try:
        import distributed
    except ImportError:
        raise MissingExtraError(
            "--scheduler needs Dask distributed: pip install 'uniroute[dask]'"
        ) from None
    return distributed


def check_scheduler(address: str) -> str:
    """Fail early, with one line, on a ``--scheduler`` value of neither form or a missing extra."""
    if address.startswith(LOCAL_PREFIX):
        workers = address[len(LOCAL_PREFIX) :]
        if not workers.isdigit() or int(workers) < 1:
            raise UsageError(
                f"--scheduler {address!r}: local:N needs a whole number of workers N >= 1"
            )
    elif not address.startswith(SCHEMES):
        raise UsageError(
            f"--scheduler {address!r}: expected tcp://HOST:PORT (an existing Dask scheduler) "
            "or local:N (N local worker processes)"
        )
    _import_distributed()
    return address


@contextlib.contextmanager
def dask_client(address: str, *, timeout: float = CONNECT_TIMEOUT) -> Iterator[Any]:
    """A ``distributed.Client`` on ``address`` (see the module docstring), closed on exit."""
    check_scheduler(address)
    distributed = _import_distributed()
    with contextlib.ExitStack() as stack:
        if address.startswith(LOCAL_PREFIX):
            workers = int(address[len(LOCAL_PREFIX) :])
            # One thread per worker process: trials hold the GIL in Python code, so parallelism
            # comes from processes. Loopback only, and no dashboard; the scheduler's HTTP
            # endpoints (health, metrics) on a free port, not on 8787, which may be taken.
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    scheduler_kwargs=LOCAL_SCHEDULER_OPTIONS,
                    silence_logs=logging.ERROR,
                )
            )
            target: Any = cluster
        else:
            target = address
        try:
            client = distributed.Client(target, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"--scheduler {address}: cannot reach the Dask scheduler within {timeout:g} s "
                f"({_reason(exc)})"
            ) from None
        stack.enter_context(client)
        yield client


def run_trials_on_cluster(
    client: Any,
    dataset: RoutingDataset,
    encoder_factory: EncoderFactory,
    config: TrialConfig,
    *,
    fixed_embeddings: np.ndarray | None = None,
    encoder_id: str | None = None,
    on_trial: Callable[[int, TrialOutcome], None] | None = None,
    progress: ProgressHook | None = None,
) -> EvaluationRun:
    """``trials.run_trials`` with each trial a task on ``client``'s cluster; the same results.

    ``encoder_factory`` and ``config`` (its calibrator included) are pickled to the workers, so
    they must be importable there (module-level functions, ``functools.partial``). ``progress``
    hears of one step whose units are whole trials, counted as they finish, in any order;
    ``on_trial(t, outcome)`` is called as each trial finishes. A trial that fails (or whose
    worker dies) stops the run with a :class:`ClusterError` naming it.
    """
    distributed = _import_distributed()
    seeds = trial_seeds(config, dataset)
    n = len(seeds)
    n_workers = len(client.scheduler_info().get("workers", {}))
    if progress is not None:
        progress(
            f"running {n} trial(s) of {len(config.specs())} router(s) on {n_workers} Dask "
            f"worker(s)",
            0,
            n,
        )
    # Shipped once, not once per task: the dataset is the bulk of every trial's input.
    dataset_future = client.scatter(dataset, broadcast=True)
    embeddings_future = (
        None if fixed_embeddings is None else client.scatter(fixed_embeddings, broadcast=True)
    )
    # The workers' native thread pools as this process's, so each trial computes the same bits
    # as it would here (see compute_trial); read after numpy and scikit-learn are loaded.
    threads = thread_counts()
    token = os.urandom(4).hex()
    futures = [
        client.submit(
            compute_trial,
            dataset_future,
            encoder_factory,
            config,
            seed,
            embeddings_future,
            threads=threads,
            key=f"uniroute-trial-{t + 1}-of-{n}-{token}",
            pure=False,
            # A trial that kills its worker would kill every worker it is retried on.
            retries=0,
        )
        for t, seed in enumerate(seeds)
    ]
    index = {future.key: t for t, future in enumerate(futures)}
    results: list[tuple[TrialOutcome, str] | None] = [None] * n
    try:
        for done, future in enumerate(distributed.as_completed(futures, loop=client.loop), start=1):
            t = index[future.key]
            try:
                result: tuple[TrialOutcome, str] = future.result()
            except Exception as exc:
                raise ClusterError(
                    f"trial {t + 1}/{n} (seed {seeds[t]}) failed on the Dask cluster: "
                    f"{_reason(exc)}"
                ) from None
            results[t] = result
            outcome = result[0]
            if progress is not None:
                progress(f"trial {t + 1}/{n} done", done, n)
            if on_trial is not None:
                on_trial(t, outcome)
    finally:
        # Nothing left running on a shared cluster once this run stops, finished or not.
        client.cancel([f for f in futures if not f.done()])
    outcomes = [r[0] for r in results if r is not None]
    if fixed_embeddings is None:
        # As in the serial run: the encoder id is that of the last trial's fitted encoder.
        encoder_id = results[-1][1] if results[-1] is not None else encoder_id
    return EvaluationRun(
        outcomes=outcomes,
        results=aggregate(outcomes, dataset=dataset.name, encoder=encoder_id or "", config=config),
    )


def _reason(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
