"""Trials on a real Dask cluster (worker processes on loopback) equal the serial run's."""

from __future__ import annotations

import dataclasses
import functools
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from distributed import Client, LocalCluster

from uniroute.cli.main import main
from uniroute.embeddings.factory import make_encoder
from uniroute.evaluation.distributed import (
    LOCAL_SCHEDULER_OPTIONS,
    ClusterError,
    run_trials_on_cluster,
)
from uniroute.evaluation.trials import TrialConfig, run_trials

ROUTERS = ["uniroute-kmeans", "knn", "zero"]
TFIDF = functools.partial(make_encoder, "tfidf")


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """Two worker processes, one thread each, on loopback: a real cluster, started here."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs=LOCAL_SCHEDULER_OPTIONS,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def comparable(results: dict[str, Any]) -> str:
    """results.json without its timings, as canonical JSON (so NaN compares equal to NaN)."""
    results = json.loads(json.dumps(results))
    results.pop("seconds", None)
    for entry in results["routers"].values():
        entry.pop("fit_seconds")
    return json.dumps(results, sort_keys=True)


def test_cluster_trials_equal_the_serial_run(arc_dataset, client: Client) -> None:
    config = TrialConfig(routers=ROUTERS, test_models=4, trials=3, seed=11)
    serial = run_trials(arc_dataset, TFIDF, config)
    events: list[tuple[int, int]] = []
    finished: list[int] = []
    cluster = run_trials_on_cluster(
        client,
        arc_dataset,
        TFIDF,
        config,
        progress=lambda message, done, total: events.append((done, total)),
        on_trial=lambda t, outcome: finished.append(t),
    )
    assert comparable(cluster.results) == comparable(serial.results)
    # The TF-IDF encoder is refitted per trial and identified by a hash of its fitted state: the
    # same id means the workers computed the same SVD, bit for bit.
    assert cluster.results["encoder"] == serial.results["encoder"]
    for ours, theirs in zip(cluster.outcomes, serial.outcomes, strict=True):
        assert ours.test_models == theirs.test_models
        for label in ROUTERS:
            assert np.array_equal(ours.curves[label].costs, theirs.curves[label].costs)
            assert np.array_equal(ours.curves[label].qualities, theirs.curves[label].qualities)
    # Progress counts whole trials as they finish, whatever the order: every trial once.
    assert events == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert sorted(finished) == [0, 1, 2]


def test_a_failed_trial_stops_the_run_naming_it(arc_dataset, client: Client) -> None:
    # uniroute-verify needs recorded answers: every trial fails on its worker.
    no_answers = dataclasses.replace(arc_dataset, answers=None)
    config = TrialConfig(routers=["uniroute-verify"], test_models=4, trials=2, seed=0)
    with pytest.raises(ClusterError, match=r"trial [12]/2 \(seed \d+\) failed .*RouterError"):
        run_trials_on_cluster(client, no_answers, TFIDF, config)


def cli_args(arc_file: Path, out: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--data",
        str(arc_file),
        "--format",
        "routerbench",
        "--encoder",
        "tfidf",
        "--routers",
        "uniroute-kmeans,zero",
        "--test-models",
        "4",
        "--trials",
        "2",
        "--seed",
        "3",
        "--out",
        str(out),
        *extra,
    ]


def test_cli_local_cluster_writes_the_serial_results(arc_file: Path, tmp_path: Path) -> None:
    assert main(cli_args(arc_file, tmp_path / "serial")) == 0
    assert main(cli_args(arc_file, tmp_path / "dask", "--scheduler", "local:2")) == 0
    serial = json.loads((tmp_path / "serial" / "results.json").read_text())
    dask = json.loads((tmp_path / "dask" / "results.json").read_text())
    assert comparable(dask) == comparable(serial)


def refused_port() -> int:
    """A loopback port nothing listens on: bound once to pick it, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_scheduler_is_one_line(arc_file: Path, tmp_path: Path, capsys) -> None:
    address = f"tcp://127.0.0.1:{refused_port()}"
    started = time.monotonic()
    args = cli_args(arc_file, tmp_path / "run", "--scheduler", address)
    assert main([*args, "--scheduler-timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert (
        f"uniroute: error: --scheduler {address}: cannot reach the Dask scheduler within 2 s" in err
    )
    assert "Traceback" not in err and err.count("uniroute: error") == 1
    assert time.monotonic() - started < 20
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize("address", ["localhost:8786", "local:0", "local:two"])
def test_malformed_scheduler_is_refused_before_the_data_is_read(
    tmp_path: Path, capsys, address: str
) -> None:
    args = cli_args(tmp_path / "absent.csv", tmp_path / "run", "--scheduler", address)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--scheduler {address!r}" in err and "Traceback" not in err


def test_without_the_extra_scheduler_says_to_install_it(
    arc_file: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    # A module set to None in sys.modules cannot be imported: distributed as if not installed.
    monkeypatch.setitem(sys.modules, "distributed", None)
    assert main(cli_args(arc_file, tmp_path / "run", "--scheduler", "local:2")) == 2
    err = capsys.readouterr().err
    assert "pip install 'uniroute[dask]'" in err and "Traceback" not in err
