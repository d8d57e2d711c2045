"""`uniroute eval` end to end on real RouterBench data with the light encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uniroute.cli.build_cmd import BUILD_ROUTERS
from uniroute.cli.eval_cmd import ALL_ROUTERS
from uniroute.cli.main import main
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.routers import ESTIMATORS

ROUTERBENCH = default_data_dir() / "routerbench"

pytestmark = pytest.mark.skipif(not ROUTERBENCH.is_dir(), reason="shared RouterBench data absent")


def eval_args(out: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--data",
        str(ROUTERBENCH),
        "--format",
        "routerbench",
        "--encoder",
        "tfidf",
        "--routers",
        "uniroute-kmeans,knn,zero,oracle",
        "--test-models",
        "5",
        "--trials",
        "2",
        "--out",
        str(out),
        *extra,
    ]


def test_the_commands_offer_exactly_the_estimators_by_name() -> None:
    # The CLI lists them without importing the estimators, so `uniroute --help` stays instant.
    assert list(ALL_ROUTERS) == list(ESTIMATORS)
    assert set(BUILD_ROUTERS) <= set(ESTIMATORS)


def test_eval_writes_results_table_and_plot(tmp_path: Path, capsys) -> None:
    assert main(eval_args(tmp_path / "run")) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["dataset"] == "routerbench"
    assert results["encoder"].startswith("tfidf-svd-")
    assert results["trials"] == 2 and results["test_models"] == 5
    assert set(results["routers"]) == {"uniroute-kmeans", "knn", "zero", "oracle"}
    for name in results["routers"]:
        assert f"| {name} |" in printed
        assert f"| {name} |" in (tmp_path / "run" / "results.md").read_text()
    assert (tmp_path / "run" / "deferral.png").stat().st_size > 10_000
    oracle = results["routers"]["oracle"]["area"]["mean"]
    assert all(r["area"]["mean"] <= oracle for r in results["routers"].values())


def test_eval_with_a_cost_map_uses_those_costs(tmp_path: Path) -> None:
    costs_file = tmp_path / "costs.json"
    models = load_dataset(ROUTERBENCH / "mbpp_test.csv", "routerbench").models
    costs_file.write_text(json.dumps({m: float(i + 1) for i, m in enumerate(models)}))
    args = eval_args(tmp_path / "run", "--costs", str(costs_file))
    args[args.index(str(ROUTERBENCH))] = str(ROUTERBENCH / "mbpp_test.csv")
    assert main(args) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["trials"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--routers", "uniroute-kmeans,bogus"], "unknown router"),
        (["--test-models", "10"], "at least 2 must remain"),
        (["--router-params", "{not json"], "--router-params"),
        (["--costs", "/nonexistent/costs.json"], "costs.json"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path: Path, capsys, extra, message) -> None:
    args = eval_args(tmp_path / "run")
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "uniroute: error:" in err and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("split", ["0.5,0.5", "a,b,c"])
def test_malformed_split_is_a_usage_error_not_a_traceback(tmp_path: Path, capsys, split) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(eval_args(tmp_path / "run", "--split", split))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--split" in err and "Traceback" not in err
