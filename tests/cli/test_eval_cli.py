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


@pytest.fixture(autouse=True)
def _shared_routerbench() -> None:
    """These tests read the shared RouterBench data: fail, never skip, when it is missing."""
    if not ROUTERBENCH.is_dir():
        pytest.fail(f"shared RouterBench data not found at {ROUTERBENCH} (set UNIROUTE_DATA)")


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
    assert (tmp_path / "run" / "paired_differences.png").stat().st_size > 10_000
    oracle = results["routers"]["oracle"]["area"]["mean"]
    assert all(r["area"]["mean"] <= oracle for r in results["routers"].values())


def test_eval_verify_on_arc_only(tmp_path: Path) -> None:
    args = eval_args(tmp_path / "run", "--tasks", "arc-challenge", "--trials", "1")
    args += ["--routers", "uniroute-kmeans,uniroute-verify"]
    assert main(args) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    verify = results["routers"]["uniroute-verify"]
    assert results["models"]["test_prompts_per_trial"] < 1484 * 0.31
    assert verify["plans_per_trial"][0]["plans"] >= 1
    assert "uniroute-kmeans" in verify["sign_tests"]


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


def small_routerbench(tmp_path: Path) -> Path:
    """The two test files of RouterBench (both tasks, about 570 prompts) as one data folder."""
    folder = tmp_path / "routerbench-small"
    folder.mkdir()
    for name in ("arc_challenge_test.csv", "mbpp_test.csv"):
        (folder / name).symlink_to(ROUTERBENCH / name)
    return folder


@pytest.mark.slow  # two runs of `uniroute eval`, with a sweep and calibration
def test_partial_evidence_prior_variants_and_calibration(tmp_path: Path, capsys) -> None:
    data = small_routerbench(tmp_path)
    routers = "uniroute-kmeans,uniroute-kmeans:own-mean,zero"
    base = eval_args(tmp_path / "default")
    base[base.index(str(ROUTERBENCH))] = str(data)
    base[base.index("--routers") + 1] = routers
    assert main(base) == 0
    swept = [
        *base,
        "--out",
        str(tmp_path / "swept"),
        "--onboard-prompts",
        "10,all",
        "--missing-task",
        "each",
        "--calibrate-quality",
        "0.7",
    ]
    assert main(swept) == 0
    printed = capsys.readouterr().out
    default = json.loads((tmp_path / "default" / "results.json").read_text())
    results = json.loads((tmp_path / "swept" / "results.json").read_text())
    assert set(results["routers"]) == set(routers.split(","))
    assert results["prior_pairs"] == {"uniroute-kmeans": "uniroute-kmeans:own-mean"}
    evidence = results["evidence"]
    assert [s["label"] for s in evidence["settings"]] == ["n=10", "all", "missing-task"]
    assert evidence["settings"][0]["kept_prompts_per_trial"] == 10
    assert all(t in {"arc-challenge", "mbpp"} for t in evidence["missing_task_per_trial"])
    for name in results["routers"]:
        # The sweep changes nothing of the default evaluation, and "all" is that evaluation.
        assert results["routers"][name]["per_trial"] == default["routers"][name]["per_trial"]
        assert (
            evidence["routers"][name]["all"]["per_trial"] == default["routers"][name]["per_trial"]
        )
    calibration = results["calibration"]["quality"]
    assert calibration["target"] == 0.7
    assert set(calibration["routers"]) == set(routers.split(","))
    for entry in calibration["routers"].values():
        assert entry["trials"] == 2 and len(entry["per_trial"]["realised_quality"]) == 2
    markdown = (tmp_path / "swept" / "results.md").read_text()
    for heading in ("## Area by onboarding evidence", "## Calibration to expected quality ≥ 0.7"):
        assert heading in markdown and heading in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--onboard-prompts", "10,none"], "--onboard-prompts"),
        (["--missing-task", "poetry"], "not a task"),
        (["--routers", "knn:own-mean"], "no Psi prior"),
        (["--routers", "uniroute-kmeans:flat"], "unknown Psi prior"),
        (["--calibrate-quality", "1.5"], "--calibrate-quality"),
    ],
)
def test_bad_partial_evidence_options_give_one_clear_line(
    tmp_path: Path, capsys, extra, message
) -> None:
    args = eval_args(tmp_path / "run")
    flag, value = extra
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "uniroute: error:" in err and message in err
    assert "Traceback" not in err
