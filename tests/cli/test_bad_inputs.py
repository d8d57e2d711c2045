"""Every bad input to `uniroute` is one line `uniroute: error: ...` naming what is wrong, exit 2.

Each case runs the real command line in-process (``uniroute.cli.main.main``) on a file, an option
or a saved state that is wrong in one way, and checks the whole of stderr: exactly one line, that
line the error, naming the file, row or option at fault. Options are checked before any data is
read: where a case gives a data path that does not exist, its error must still be about the
option.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from uniroute.artifact import Artifact, _artifact_id, _file_checksums, _manifest_checksum
from uniroute.cli.main import main
from uniroute.deployment.pool_changes import seed_registry
from uniroute.registry import Registry

#: Page size of the registry files SQLite writes here (its default).
PAGE = 4096
DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "1" + "0" * 5000


@dataclass
class Env:
    """Where one case's inputs are: the shared artifact, a private registry, a scratch folder."""

    artifact: Path
    registry: Path
    data: Path
    tmp: Path

    def write(self, name: str, content: str | bytes) -> Path:
        """A file of the scratch folder with this content."""
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def artifact_copy(self, name: str) -> Path:
        """A private copy of the artifact directory, to break."""
        target = self.tmp / name
        shutil.copytree(self.artifact, target)
        return target

    def registry_bytes(self, name: str, change: Callable[[bytes], bytes]) -> Path:
        """A copy of the registry file with its bytes changed by ``change``."""
        return self.write(name, change(self.registry.read_bytes()))

    def missing(self) -> str:
        """A data path that does not exist (an option must be refused before it is read)."""
        return str(self.tmp / "no-such-data.csv")


@pytest.fixture(scope="module")
def seeded_registry(arc_artifact: Artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry of the shared artifact's training models, checkpointed into one file."""
    path = tmp_path_factory.mktemp("bad-inputs") / "pool.db"
    with Registry(path) as registry:
        seed_registry(arc_artifact, registry)
    return path


@pytest.fixture
def env(arc_artifact: Artifact, arc_file: Path, seeded_registry: Path, tmp_path: Path) -> Env:
    private = tmp_path / "pool.db"
    shutil.copy(seeded_registry, private)
    return Env(artifact=arc_artifact.path, registry=private, data=arc_file, tmp=tmp_path)


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Exit code and stderr of `uniroute ARGV` (argparse refusals exit through SystemExit)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def assert_one_clear_line(code: int, err: str, *names: str) -> None:
    """Exit 2 and stderr exactly one line 'uniroute: error: ...' holding every one of ``names``."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("uniroute: error: "), err
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"
    assert code == 2, (code, err)


def _rewrite_manifest(directory: Path, change: Callable[[dict], None]) -> None:
    """Change the artifact manifest and make every checksum match again, as an edit would."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    manifest["files"] = _file_checksums(directory)
    manifest["artifact_id"] = _artifact_id(manifest["files"])
    manifest["manifest_sha256"] = _manifest_checksum(manifest)
    path.write_text(json.dumps(manifest))


def _garbage(n: int) -> bytes:
    return random.Random(n).randbytes(n)


# --------------------------------------------------------------------------- the cases
Case = Callable[[Env], tuple[list[str], list[str]]]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    """Register a case: given the Env, it returns the argv and the texts the error must name."""

    def register(function: Case) -> Case:
        assert name not in CASES, f"two cases named {name!r}"
        CASES[name] = function
        return function

    return register


# 1. A registry file corrupted past its header.
@case("registry-header-kept-rest-garbage")
def _(e: Env):
    bad = e.registry_bytes("bad.db", lambda b: b[:100] + _garbage(len(b) - 100))
    return ["models", "list", "--registry", str(bad)], [str(bad), "corrupted"]


@case("registry-truncated-mid-page")
def _(e: Env):
    bad = e.registry_bytes("cut.db", lambda b: b[: 3 * PAGE + 1000])
    return ["models", "list", "--registry", str(bad)], [str(bad), "corrupted"]


@case("registry-first-page-intact-rest-garbage")
def _(e: Env):
    # The schema page reads fine, so the file opens; the first query of a table fails.
    bad = e.registry_bytes("pages.db", lambda b: b[:PAGE] + _garbage(len(b) - PAGE))
    return ["models", "list", "--json", "--registry", str(bad)], [str(bad), "corrupted"]


@case("serve-with-a-corrupt-registry")
def _(e: Env):
    bad = e.registry_bytes("pages.db", lambda b: b[:PAGE] + _garbage(len(b) - PAGE))
    argv = ["serve", "--artifact", str(e.artifact), "--registry", str(bad), "--port", "0"]
    return argv, [str(bad), "corrupted"]


@case("route-with-a-corrupt-registry")
def _(e: Env):
    bad = e.registry_bytes("pages.db", lambda b: b[:PAGE] + _garbage(len(b) - PAGE))
    return ["route", "hi", "--artifact", str(e.artifact), "--registry", str(bad)], [str(bad)]


@case("registry-is-a-text-file")
def _(e: Env):
    notes = e.write("notes.txt", "my notes\n")
    return ["models", "list", "--registry", str(notes)], [str(notes), "not an SQLite file"]


@case("registry-under-a-file")
def _(e: Env):
    plain = e.write("plain", "x")
    target = plain / "pool.db"
    argv = ["models", "add", "m", "--cost", "1", "--scores", str(e.write("s.csv", "p,1\n"))]
    argv += ["--artifact", str(e.artifact), "--registry", str(target)]
    return argv, [str(target), "not a directory"]


# 2. Where `serve` listens.
def _serve(e: Env, *extra: str) -> list[str]:
    return ["serve", "--artifact", str(e.artifact), "--registry", str(e.registry), *extra]


@case("serve-port-too-big")
def _(e: Env):
    return _serve(e, "--port", "99999"), ["--port", "0-65535", "99999"]


@case("serve-port-negative")
def _(e: Env):
    return _serve(e, "--port", "-1"), ["--port", "0-65535"]


@case("serve-port-not-a-number")
def _(e: Env):
    return _serve(e, "--port", "http"), ["--port", "'http'"]


@case("serve-host-not-a-host")
def _(e: Env):
    return _serve(e, "--host", "not a host", "--port", "0"), ["--host 'not a host'"]


# 3. Gateway config files.
@case("config-json-not-utf8")
def _(e: Env):
    path = e.write("gateway.json", b'{"log_level": "\xff"}')
    return ["serve", "--config", str(path)], [str(path), "UTF-8"]


@case("config-toml-not-utf8")
def _(e: Env):
    path = e.write("gateway.toml", b'log_level = "\xff"\n')
    return ["serve", "--config", str(path)], [str(path), "UTF-8"]


@case("config-json-nested-deep")
def _(e: Env):
    path = e.write("gateway.json", DEEP)
    return ["serve", "--config", str(path)], [str(path), "nested"]


@case("config-toml-nested-deep")
def _(e: Env):
    path = e.write("gateway.toml", "upstream_allowlist = " + DEEP + "\n")
    return ["serve", "--config", str(path)], [str(path), "nested"]


@case("config-json-infinity")
def _(e: Env):
    path = e.write("gateway.json", '{"upstream_timeout_s": Infinity}')
    return ["serve", "--config", str(path)], [str(path), "Infinity"]


@case("config-toml-inf")
def _(e: Env):
    path = e.write("gateway.toml", "upstream_timeout_s = inf\n")
    return ["serve", "--config", str(path)], [str(path), "upstream_timeout_s", "finite"]


@case("config-is-a-directory")
def _(e: Env):
    return ["serve", "--config", str(e.tmp)], [str(e.tmp), "directory"]


# 4. Scores files and data read as JSON / JSON Lines.
def _add_scores(e: Env, scores: Path) -> list[str]:
    return ["models", "add", "new-model", "--cost", "0.1", "--scores", str(scores),
            "--artifact", str(e.artifact), "--registry", str(e.registry)]  # fmt: skip


@case("scores-jsonl-nested-deep")
def _(e: Env):
    path = e.write("s.jsonl", '{"prompt_id": "p0", "score": 1}\n{"prompt_id": ' + DEEP + "}\n")
    return _add_scores(e, path), [f"{path}, line 2", "nested"]


@case("scores-jsonl-huge-number")
def _(e: Env):
    path = e.write("s.jsonl", '{"prompt_id": "p0", "score": ' + HUGE_INT + "}\n")
    return _add_scores(e, path), [f"{path}, line 1", "5001 characters"]


@case("scores-jsonl-lone-surrogate")
def _(e: Env):
    path = e.write("s.jsonl", '\n{"prompt_id": "\\ud800", "score": 1}\n')
    return _add_scores(e, path), [f"{path}, line 2", "surrogate"]


@case("scores-is-a-directory")
def _(e: Env):
    return _add_scores(e, e.tmp), [str(e.tmp), "directory"]


def _eval(e: Env, data: Path | str, format_: str, *extra: str) -> list[str]:
    return ["eval", "--data", str(data), "--format", format_, "--test-models", "2",
            "--encoder", "tfidf", "--routers", "zero", "--trials", "1",
            "--out", str(e.tmp / "out"), *extra]  # fmt: skip


@case("long-format-jsonl-nested-deep")
def _(e: Env):
    row = '{"prompt_id": "q", "prompt": "p", "model": "m", "score": 1}\n'
    path = e.write("logs.jsonl", row + '{"prompt_id": "q", "prompt": ' + DEEP + "}\n")
    return _eval(e, path, "long"), [f"{path}, line 2", "nested"]


@case("long-format-jsonl-huge-number")
def _(e: Env):
    path = e.write("logs.jsonl", '{"prompt_id": "q", "prompt": "p", "score": ' + HUGE_INT + "}\n")
    return _eval(e, path, "long"), [f"{path}, line 1", "characters"]


@case("routerdc-json-nested-deep")
def _(e: Env):
    path = e.write("dc.json", DEEP)
    return _eval(e, path, "routerdc"), [str(path), "nested"]


@case("cost-map-nested-deep")
def _(e: Env):
    costs = e.write("costs.json", '{"a": ' + DEEP + "}")
    return _eval(e, e.data, "routerbench", "--costs", str(costs)), [str(costs), "nested"]


@case("cost-map-huge-number")
def _(e: Env):
    costs = e.write("costs.json", '{"a": ' + HUGE_INT + "}")
    return _eval(e, e.data, "routerbench", "--costs", str(costs)), [str(costs), "characters"]


# 5. An artifact whose manifest is not the expected object.
def _add_with(e: Env, artifact: Path) -> list[str]:
    scores = e.write("s.csv", "prompt_id,score\np0,1\n")
    return ["models", "add", "new-model", "--cost", "0.1", "--scores", str(scores),
            "--artifact", str(artifact), "--registry", str(e.registry)]  # fmt: skip


@case("manifest-is-a-list")
def _(e: Env):
    art = e.artifact_copy("art")
    (art / "manifest.json").write_text("[1, 2]")
    return _add_with(e, art), [str(art / "manifest.json"), "object", "list"]


@case("manifest-is-a-string")
def _(e: Env):
    art = e.artifact_copy("art")
    (art / "manifest.json").write_text('"artifact"')
    return ["route", "hi", "--artifact", str(art), "--registry", str(e.registry)], [
        str(art / "manifest.json")
    ]


@case("manifest-not-utf8")
def _(e: Env):
    art = e.artifact_copy("art")
    (art / "manifest.json").write_bytes(b'{"kind": "\xff"}')
    return _add_with(e, art), [str(art / "manifest.json"), "not UTF-8"]


@case("manifest-nested-deep")
def _(e: Env):
    art = e.artifact_copy("art")
    (art / "manifest.json").write_text(DEEP)
    return _add_with(e, art), [str(art / "manifest.json")]


@case("manifest-training-is-a-list")
def _(e: Env):
    art = e.artifact_copy("art")
    _rewrite_manifest(art, lambda m: m.update(training=[1]))
    return _add_with(e, art), [str(art / "manifest.json"), "'training'"]


@case("manifest-encoder-is-a-string")
def _(e: Env):
    art = e.artifact_copy("art")
    _rewrite_manifest(art, lambda m: m.update(encoder="tfidf"))
    return _add_with(e, art), [str(art / "manifest.json"), "'encoder'"]


@case("manifest-array-entry-is-a-number")
def _(e: Env):
    art = e.artifact_copy("art")
    _rewrite_manifest(art, lambda m: m["training"].update(arrays={"scores": 5}))
    return _add_with(e, art), [str(art / "training"), "'scores'"]


@case("manifest-training-models-missing")
def _(e: Env):
    art = e.artifact_copy("art")
    _rewrite_manifest(art, lambda m: m["training"].pop("models"))
    return _add_with(e, art), [str(art / "manifest.json"), "'training.models'"]


@case("router-manifest-without-params")
def _(e: Env):
    art = e.artifact_copy("art")
    router_manifest = art / "router" / "manifest.json"
    saved = json.loads(router_manifest.read_text())
    del saved["params"]
    router_manifest.write_text(json.dumps(saved))
    _rewrite_manifest(art, lambda m: None)
    return _add_with(e, art), [str(router_manifest), "params"]


@case("models-show-with-a-list-manifest")
def _(e: Env):
    art = e.artifact_copy("art")
    (art / "manifest.json").write_text("[]")
    argv = ["models", "show", "claude-v1", "--artifact", str(art), "--registry", str(e.registry)]
    return argv, [str(art / "manifest.json")]


# 6. Encoder and router parameters, refused before the data is read.
def _build(e: Env, *extra: str, data: str | None = None) -> list[str]:
    return ["build", "--data", data or e.missing(), "--format", "routerbench",
            "--out", str(e.tmp / "artifact"), "--encoder", "tfidf", *extra]  # fmt: skip


@case("encoder-params-negative-components")
def _(e: Env):
    return _build(e, "--encoder-params", '{"n_components": -1}'), [
        "--encoder-params", "n_components", "-1",
    ]  # fmt: skip


@case("encoder-params-unknown-parameter")
def _(e: Env):
    return _build(e, "--encoder-params", '{"n_dims": 8}'), ["--encoder-params", "'n_dims'"]


@case("encoder-params-minilm-window")
def _(e: Env):
    argv = _build(e, "--encoder-params", '{"max_tokens": 0}')
    argv[argv.index("tfidf")] = "minilm"
    return argv, ["--encoder-params", "max_tokens"]


@case("encoder-params-nan")
def _(e: Env):
    return _build(e, "--encoder-params", '{"n_components": NaN}'), ["--encoder-params", "NaN"]


@case("encoder-params-nested-deep")
def _(e: Env):
    return _build(e, "--encoder-params", DEEP), ["--encoder-params", "nested"]


@case("router-params-unknown-parameter")
def _(e: Env):
    return _build(e, "--router-params", '{"k": 3}'), ["--router-params", "['k']"]


@case("eval-router-params-not-an-object-per-router")
def _(e: Env):
    argv = _eval(e, e.missing(), "routerbench", "--router-params", '{"zero": 5}')
    return argv, ["--router-params", "'zero'"]


@case("eval-router-params-unknown-parameter")
def _(e: Env):
    argv = _eval(e, e.missing(), "routerbench", "--router-params", '{"zero": {"k": 1}}')
    return argv, ["--router-params", "['k']"]


# 7. Counts that must be positive, checked while parsing.
@case("models-add-concurrency-zero")
def _(e: Env):
    return [*_add_scores(e, e.tmp / "s.csv"), "--concurrency", "0"], ["--concurrency", ">= 1"]


@case("models-add-concurrency-negative")
def _(e: Env):
    return [*_add_scores(e, e.tmp / "s.csv"), "--concurrency", "-4"], ["--concurrency", ">= 1"]


@case("models-add-retries-negative")
def _(e: Env):
    return [*_add_scores(e, e.tmp / "s.csv"), "--retries", "-1"], ["--retries", ">= 0"]


@case("models-add-timeout-nan")
def _(e: Env):
    return [*_add_scores(e, e.tmp / "s.csv"), "--timeout", "nan"], ["--timeout", "> 0"]


@case("eval-test-models-zero")
def _(e: Env):
    argv = _eval(e, e.missing(), "routerbench")
    argv[argv.index("--test-models") + 1] = "0"
    return argv, ["--test-models", ">= 1"]


@case("eval-trials-zero")
def _(e: Env):
    argv = _eval(e, e.missing(), "routerbench")
    argv[argv.index("--trials") + 1] = "0"
    return argv, ["--trials", ">= 1"]


@case("eval-seed-negative")
def _(e: Env):
    return _eval(e, e.missing(), "routerbench", "--seed", "-1"), ["--seed", ">= 0"]


@case("build-seed-negative")
def _(e: Env):
    return _build(e, "--seed", "-3"), ["--seed", ">= 0"]


@case("build-val-fraction-one")
def _(e: Env):
    return _build(e, "--val-fraction", "1"), ["--val-fraction", "between 0 and 1"]


# Further bad inputs found by trying every sub-command.
@case("eval-split-not-summing-to-one")
def _(e: Env):
    return _eval(e, e.missing(), "routerbench", "--split", "0.5,0.5,0.5"), ["--split", "sum"]


@case("eval-split-nan")
def _(e: Env):
    return _eval(e, e.missing(), "routerbench", "--split", "nan,0.5,0.5"), ["--split", "> 0"]


@case("eval-no-router")
def _(e: Env):
    argv = _eval(e, e.missing(), "routerbench")
    argv[argv.index("--routers") + 1] = ","
    return argv, ["--routers"]


@case("eval-out-is-a-file")
def _(e: Env):
    out = e.write("results", "not a folder")
    argv = _eval(e, e.missing(), "routerbench")
    argv[argv.index("--out") + 1] = str(out)
    return argv, ["--out", str(out)]


@case("eval-cache-dir-is-a-file")
def _(e: Env):
    cache = e.write("cache", "not a folder")
    return _eval(e, e.missing(), "routerbench", "--cache-dir", str(cache)), ["--cache-dir"]


@case("build-out-under-a-file")
def _(e: Env):
    plain = e.write("plain", "x")
    argv = _build(e)
    argv[argv.index("--out") + 1] = str(plain / "artifact")
    return argv, [str(plain / "artifact")]


@case("build-registry-is-a-directory")
def _(e: Env):
    return _build(e, "--registry", str(e.tmp)), ["--registry", str(e.tmp), "directory"]


@case("models-unknown-action")
def _(e: Env):
    return ["models", "rename", "a", "b"], ["models", "'rename'"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_clear_line(name: str, env: Env, capsys) -> None:
    argv, names = CASES[name](env)
    code, err = run(argv, capsys)
    assert_one_clear_line(code, err, *names)


def test_a_one_byte_file_given_as_registry_is_left_as_it_was(env: Env, capsys) -> None:
    # SQLite takes a file of one byte for an empty database and writes a registry over it.
    blank = env.write("blank.txt", "\n")
    code, err = run(["models", "list", "--registry", str(blank)], capsys)
    assert_one_clear_line(code, err, str(blank), "not an SQLite file")
    assert blank.read_text() == "\n"


def test_a_port_in_use_is_one_clear_line(env: Env, capsys) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, err = run(_serve(env, "--host", "127.0.0.1", "--port", str(port)), capsys)
    assert_one_clear_line(code, err, f"127.0.0.1:{port}")


def test_a_reader_that_goes_away_ends_the_command_quietly(env: Env) -> None:
    script = Path(sys.executable).with_name("uniroute")
    process = subprocess.Popen(
        [str(script), "models", "list", "--json", "--registry", str(env.registry)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Closed before the command starts writing: its first write meets a pipe with no reader,
    # as `uniroute models list --json | head -1` does once head has its line.
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert err == b""
    assert process.returncode == 141  # 128 + SIGPIPE, what a shell reports for git or cat
