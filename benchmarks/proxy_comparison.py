"""The gateway against direct calls, two minimal proxies and LiteLLM's proxy: one run, one table.

Every column is measured in the same run, with the same load generator, the same real
RouterBench prompts and the same pinning: the gateway or proxy under test alone on one core
(``--gateway-cpu``, 0), the load generator and the replay upstreams (real RouterBench answers,
``uniroute.testing.replay``) on another (``--load-cpu``, 1). The columns:

* direct: the load generator calls the replay upstream itself (the baseline);
* C-parser proxy: ``benchmarks/proxies/uvloop_aiohttp.py``, a bare ASGI app on uvicorn with
  uvloop + httptools, forwarding with aiohttp;
* Starlette + httpx proxy: ``benchmarks/proxies/starlette_httpx.py``, on what a plain ``pip
  install uvicorn`` serves with (h11 on the asyncio event loop);
* LiteLLM proxy: ``pip install 'litellm[proxy]'`` in its own virtualenv (made once, cached under
  ``.cache/litellm-venv`` or ``--litellm-venv``), one worker, no database, one model_list entry;
* UniRoute named model: ``uniroute serve``, ``model: <pool model>`` (proxying only);
* UniRoute routed (TF-IDF) and (MiniLM): ``model: uniroute`` on a TF-IDF + K-means artifact and
  on a MiniLM + K-means one, the pool being three replayed RouterBench models.

Each column gets four phases, each after an untimed warm-up at the same concurrency: wrk at
c=1 and c=64 (``-t1``, a Lua script cycling through the POST bodies), a streamed phase at c=1
timed to the first body byte by ``benchmarks/proxies/loadgen.py`` (wrk cannot), and wrk at c=64
on streamed requests. CPU ms per request is the gateway process's utime + stime
(``/proc/<pid>/stat``, its children included) over a phase, divided by the phase's requests.
Before each measured run the server and the upstreams are let go idle, so that work left over
from the warm-up is not billed to it. Requests still in flight when a wrk run ends are not
counted, though the CPU they used is: on a server that completes only a few hundred requests
in a phase at c=64, this overstates its CPU ms per request by up to ~32 requests' worth.
Every response that is not a 200 (wrk's "Non-2xx or 3xx responses", plus socket errors and
timeouts) is an error, reported per cell. The table and the issue's targets (PASS/FAIL) are
printed; the exit code is 0 unless a phase had errors or a column could not run.

    .venv/bin/python benchmarks/proxy_comparison.py [--duration 10] [--skip-litellm]
        [--skip-minilm] [--quick] [--rounds 1]

``--rounds N`` measures every column N times, the columns in turn, and prints medians: on a
shared machine, other jobs land on the pinned cores too, and one round can catch a burst.

Needs wrk (``apt-get install -y wrk``) and taskset; without wrk, ``loadgen.py`` drives every
phase instead (``--load-generator asyncio``), still the same one for every column.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from uniroute.artifact import build_artifact
from uniroute.data.dataset import RoutingDataset
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_cache_dir, default_data_dir
from uniroute.deployment import Router
from uniroute.deployment.pool_changes import calibrate
from uniroute.embeddings.factory import EMBEDDING_CACHE_SUBDIR
from uniroute.errors import CalibrationError
from uniroute.registry.calibration import make_target
from uniroute.testing.child_process import ChildServerProcess
from uniroute.testing.harness import add_recorded_model
from uniroute.testing.process import GatewayProcess
from uniroute.testing.replay import ReplayServerProcess, start_replays

HERE = Path(__file__).resolve().parent
PROXIES = HERE / "proxies"
#: The pool: three replayed RouterBench models, cheapest first.
MODELS = ("mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview")
#: The pool model every non-routed column names (direct, the proxies and LiteLLM call its
#: upstream).
NAMED = MODELS[1]
#: LiteLLM refuses to start without a master key; every column is sent it, so that every
#: column gets byte-for-byte the same requests (the others ignore it).
MASTER_KEY = "sk-proxy-comparison-0123456789abcdef0123456789abcdef"
AUTH_HEADER = f"Authorization: Bearer {MASTER_KEY}"
REQUEST_TIMEOUT = "30s"
#: Prompts routed in process to check a calibrated trade-off (MiniLM embeds them once).
SHARE_SAMPLE = 300
#: Cells of phases that completed fewer requests show how many (their figures are rougher).
FEW_REQUESTS = 200
#: A running server under test: its base URL and the pid whose CPU time is counted.
ServerContext = AbstractContextManager[tuple[str, int]]

COLUMNS = {
    "direct": "direct",
    "c-parser": "C-parser proxy (uvloop + httptools + aiohttp)",
    "starlette": "Starlette + httpx proxy",
    "litellm": "LiteLLM proxy",
    "named": "UniRoute named model",
    "tfidf": "UniRoute routed (TF-IDF)",
    "minilm": "UniRoute routed (MiniLM)",
}
#: phase key: (concurrency, streamed); "ttfb" is always timed by loadgen.py.
PHASES = {"c1": (1, False), "c64": (64, False), "ttfb": (1, True), "stream64": (64, True)}

WRK_SCRIPT = r"""
-- POST the JSON bodies of the file given after "--", one a line, cycling through them.
local requests = {}
local next_index = 0

function init(args)
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %KEY%"}
  for line in io.lines(args[1]) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", nil, headers, line)
    end
  end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %.0f, "duration_us": %.0f, "connect": %.0f, "read": %.0f, "write": %.0f, '
      .. '"status": %.0f, "timeout": %.0f, "p50_us": %.0f, "p99_us": %.0f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
""".replace("%KEY%", MASTER_KEY)


@dataclass
class Phase:
    """The figures of one load phase against one column (or their medians over rounds)."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    cpu_ms: float | None = None
    error_samples: list[str] = field(default_factory=list)
    #: Requests completed per second.
    rps: float = field(init=False)

    def __post_init__(self) -> None:
        """Derive the throughput."""
        self.rps = self.requests / self.seconds if self.seconds > 0 else 0.0


def median_phase(phases: Sequence[Phase]) -> Phase:
    """One phase of several rounds: each figure's median, the requests and errors summed."""
    cpu = [p.cpu_ms for p in phases if p.cpu_ms is not None]
    merged = Phase(
        requests=sum(p.requests for p in phases),
        seconds=sum(p.seconds for p in phases),
        errors=sum(p.errors for p in phases),
        p50_ms=float(np.median([p.p50_ms for p in phases])),
        p99_ms=float(np.median([p.p99_ms for p in phases])),
        cpu_ms=float(np.median(cpu)) if cpu else None,
        error_samples=[s for p in phases for s in p.error_samples],
    )
    merged.rps = float(np.median([p.rps for p in phases]))
    return merged


@dataclass
class Column:
    """One column of the table: its phases, or why it could not be measured."""

    key: str
    phases: dict[str, Phase] = field(default_factory=dict)
    failure: str | None = None
    upstream_hits: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def of_rounds(rounds: Sequence[Column]) -> Column:
        """One column of several rounds: phase medians; failed if any round failed."""
        merged = Column(rounds[0].key)
        merged.failure = next((c.failure for c in rounds if c.failure), None)
        if merged.failure is None:
            merged.phases = {p: median_phase([c.phases[p] for c in rounds]) for p in PHASES}
        for column in rounds:
            for model, hits in column.upstream_hits.items():
                merged.upstream_hits[model] = merged.upstream_hits.get(model, 0) + hits
        return merged


@dataclass
class Setup:
    """What every phase needs: the load generator, the bodies, the pinning and the timings."""

    generator: str
    bodies: dict[tuple[bool, bool], Path]  # (routed, streamed) -> JSON lines
    script: Path
    gateway_cpu: int | None
    load_cpu: int | None
    duration: int
    warmup: int


# ---------------------------------------------------------------------------- measuring


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) of a process, its live descendants and its reaped children."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # Fields after the command name (which may hold spaces): state, ppid, ...
        stats[int(entry)] = text[text.rindex(")") + 2 :].split()
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, fields in stats.items():
            if int(fields[1]) == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    total = 0.0
    for pid in tree & stats.keys():
        utime, stime, cutime, cstime = (int(v) for v in stats[pid][11:15])
        total += utime + stime + cutime + cstime
    return total / tick


def wait_idle(pids: Sequence[int], timeout: float = 60.0) -> None:
    """Wait until none of the processes uses more than a tenth of a core (or ``timeout``).

    A load run that ends abandons the requests in flight, but a server may keep working on them
    (a queued embedding, an upstream stream read to its end); that work belongs to the run that
    sent them, not to the next one.
    """
    deadline = time.monotonic() + timeout
    window = 0.5
    while time.monotonic() < deadline:
        before = [tree_cpu_seconds(pid) for pid in pids]
        time.sleep(window)
        busy = [tree_cpu_seconds(pid) - spent for pid, spent in zip(pids, before, strict=True)]
        if max(busy, default=0.0) <= 0.1 * window:
            return


def pinned(command: Sequence[str], cpu: int | None) -> list[str]:
    """The command run on one core through taskset (every thread it starts stays there)."""
    return list(command) if cpu is None else ["taskset", "-c", str(cpu), *command]


def run_wrk(setup: Setup, url: str, bodies: Path, concurrency: int, seconds: int) -> Phase:
    """One wrk run; its requests, errors and latency percentiles."""
    command = [
        "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", REQUEST_TIMEOUT,
        "-s", str(setup.script), url, "--", str(bodies),
    ]  # fmt: skip
    done = subprocess.run(
        pinned(command, setup.load_cpu), capture_output=True, text=True, timeout=seconds + 120
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {done.stdout[-500:]} {done.stderr[-500:]}")
    figures = json.loads(line.removeprefix("WRK "))
    errors = sum(int(figures[k]) for k in ("connect", "read", "write", "status", "timeout"))
    samples = [
        f"{int(figures[k])} x {k}"
        for k in ("connect", "read", "write", "status", "timeout")
        if figures[k]
    ]
    return Phase(
        requests=int(figures["requests"]),
        seconds=figures["duration_us"] / 1e6,
        errors=errors,
        p50_ms=figures["p50_us"] / 1e3,
        p99_ms=figures["p99_us"] / 1e3,
        error_samples=samples,
    )


def run_loadgen(
    setup: Setup, url: str, bodies: Path, concurrency: int, seconds: int, ttfb: bool
) -> Phase:
    """One loadgen.py run in its own process; latency (or time to first byte) percentiles."""
    command = [
        sys.executable, str(PROXIES / "loadgen.py"), url, str(bodies), "--concurrency",
        str(concurrency), "--seconds", str(seconds), "--header", AUTH_HEADER,
    ]  # fmt: skip
    done = subprocess.run(
        pinned(command, setup.load_cpu),
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr[-1000:]}")
    figures = json.loads(done.stdout)
    times = figures["ttfb_ms" if ttfb else "latency_ms"] or [float("nan")]
    return Phase(
        requests=int(figures["requests"]),
        seconds=float(figures["seconds"]),
        errors=int(figures["errors"]),
        p50_ms=float(np.percentile(times, 50)),
        p99_ms=float(np.percentile(times, 99)),
        error_samples=list(figures["error_samples"]),
    )


def measure_phase(
    setup: Setup, url: str, pid: int | None, routed: bool, phase: str, upstreams: Sequence[int]
) -> Phase:
    """Warm up, let the server and upstreams go idle, then measure one phase, with the CPU the
    server process spent during it."""
    concurrency, streamed = PHASES[phase]
    bodies = setup.bodies[(routed, streamed)]

    def load(seconds: int) -> Phase:
        """One run of the phase's load for ``seconds``."""
        if setup.generator == "wrk" and phase != "ttfb":
            return run_wrk(setup, url, bodies, concurrency, seconds)
        return run_loadgen(setup, url, bodies, concurrency, seconds, ttfb=phase == "ttfb")

    load(setup.warmup)
    wait_idle([*upstreams, *([] if pid is None else [pid])])
    cpu_before = tree_cpu_seconds(pid) if pid is not None else 0.0
    result = load(setup.duration)
    if pid is not None and result.requests:
        result.cpu_ms = (tree_cpu_seconds(pid) - cpu_before) * 1e3 / result.requests
    return result


def check_answers(url: str, model: str) -> str | None:
    """None when one plain and one streamed request get complete 200 answers, else why not."""
    body = {"model": model, "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
    headers = {"authorization": f"Bearer {MASTER_KEY}"}
    try:
        with httpx.Client(timeout=60.0, trust_env=False) as client:
            plain = client.post(url, json=body, headers=headers)
            if plain.status_code != 200:
                return f"HTTP {plain.status_code}: {plain.text[:300]}"
            if not plain.json()["choices"][0]["message"]["content"]:
                return f"an empty answer: {plain.text[:300]}"
            streamed = client.post(url, json={**body, "stream": True}, headers=headers)
            if streamed.status_code != 200 or "data: [DONE]" not in streamed.text:
                return f"stream: HTTP {streamed.status_code}: {streamed.text[-300:]}"
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def measure_column(
    setup: Setup,
    key: str,
    url: str,
    pid: int | None,
    replays: dict[str, ReplayServerProcess],
) -> Column:
    """Check the column answers, then run its four phases."""
    routed = key in ("tfidf", "minilm")
    column = Column(key)
    column.failure = check_answers(url, "uniroute" if routed else NAMED)
    if column.failure is not None:
        return column
    before = {m: int(s.stats()["requests"]) for m, s in replays.items()}
    upstreams = [s.process.pid for s in replays.values() if s.process is not None]
    for phase in PHASES:
        column.phases[phase] = result = measure_phase(setup, url, pid, routed, phase, upstreams)
        cpu = f"{result.cpu_ms:.3f} CPU ms/req" if result.cpu_ms is not None else ""
        print(
            f"  {COLUMNS[key]:<46} {phase:<9} {result.requests:7d} req {result.rps:8.1f} req/s"
            f"  p50 {result.p50_ms:8.2f} ms  p99 {result.p99_ms:8.2f} ms  {cpu}"
            f"  errors {result.errors}",
            flush=True,
        )
        for sample in result.error_samples:
            print(f"      {sample}")
    column.upstream_hits = {m: int(s.stats()["requests"]) - before[m] for m, s in replays.items()}
    return column


def measure_server(
    setup: Setup,
    keys: Sequence[str],
    server: Callable[[], ServerContext] | None,
    replays: dict[str, ReplayServerProcess],
) -> dict[str, Column]:
    """Start the columns' server (None: direct to the upstream), measure each column, stop it."""
    path = "/v1/chat/completions"
    columns: dict[str, Column] = {}
    try:
        if server is None:
            for key in keys:
                url = replays[NAMED].base_url + path
                columns[key] = measure_column(setup, key, url, None, replays)
        else:
            with server() as (base, pid):
                for key in keys:
                    columns[key] = measure_column(setup, key, base + path, pid, replays)
    except (RuntimeError, OSError, subprocess.SubprocessError, httpx.HTTPError) as exc:
        for key in keys:
            if key not in columns:
                columns[key] = Column(key, failure=f"{type(exc).__name__}: {exc}")
    for key in keys:
        failure = columns[key].failure
        if failure:
            # A traceback says most at its two ends.
            shown = failure if len(failure) <= 2500 else f"{failure[:500]} ... {failure[-2000:]}"
            print(f"  {COLUMNS[key]}: FAILED: {shown}")
    return columns


# ---------------------------------------------------------------------------- servers


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_litellm(venv: Path, spec: str) -> tuple[Path, str]:
    """LiteLLM's CLI in its own virtualenv (created and installed on first use), and its version."""
    executable = venv / "bin" / "litellm"
    if not executable.exists():
        print(f"installing {spec} into {venv} (once) ...", flush=True)
        base = shutil.which("python3") or sys.executable
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--disable-pip-version-check", spec], check=True)
    version = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return executable, version


@contextmanager
def litellm_proxy(
    executable: Path, upstream_v1: str, folder: Path, cpu: int | None
) -> Iterator[tuple[str, int]]:
    """LiteLLM's proxy (one worker, no database) in front of one upstream; (base URL, pid)."""
    port = free_port()
    config = folder / "litellm-config.yaml"
    entry = {
        "model_name": NAMED,
        "litellm_params": {"model": f"openai/{NAMED}", "api_base": upstream_v1, "api_key": "none"},
    }
    # JSON is YAML; no YAML writer needed.
    config.write_text(json.dumps({"model_list": [entry]}, indent=2))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL")
    }
    env.update(
        LITELLM_MASTER_KEY=MASTER_KEY,
        # A benchmark machine may have no internet: the cost map shipped in the package
        # instead of one fetched at start-up (which would wait on the network), no telemetry.
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_TELEMETRY="False",
    )
    command = [
        str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
        "--num_workers", "1",
    ]  # fmt: skip
    log_path = folder / "litellm.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            pinned(command, cpu), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"LiteLLM exited at start: {log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"LiteLLM not up in 300 s: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def proxy(script: str, upstream_v1: str, cpu: int | None) -> Iterator[tuple[str, int]]:
    """One of the minimal proxies in front of one upstream; (base URL, pid)."""
    command = pinned([sys.executable, str(PROXIES / script), upstream_v1], cpu)
    with ChildServerProcess(command) as server:
        assert server.process is not None
        yield server.base_url, server.process.pid


@contextmanager
def gateway(artifact: Path, registry: Path, cpu: int | None) -> Iterator[tuple[str, int]]:
    """``uniroute serve`` on its default settings, no client keys; (base URL, pid)."""
    env = {k: v for k, v in os.environ.items() if k != "UNIROUTE_CLIENT_KEYS"}
    server = GatewayProcess(artifact, registry, env=env)
    server.command = pinned(server.command, cpu)
    with server:
        assert server.process is not None
        yield server.base_url, server.process.pid


def servers_under_test(
    upstream: str,
    folder: Path,
    artifacts: dict[str, Path],
    registries: dict[str, Path],
    litellm: Path | None,
    cpu: int | None,
) -> list[tuple[list[str], Callable[[], ServerContext] | None]]:
    """Each server to measure (None: direct to the upstream) and the columns it serves."""
    servers: list[tuple[list[str], Callable[[], ServerContext] | None]] = [
        (["direct"], None),
        (["c-parser"], lambda: proxy("uvloop_aiohttp.py", upstream, cpu)),
        (["starlette"], lambda: proxy("starlette_httpx.py", upstream, cpu)),
    ]
    if litellm is not None:
        exe = litellm
        servers.append((["litellm"], lambda: litellm_proxy(exe, upstream, folder, cpu)))
    # Named and routed requests go to the same TF-IDF gateway process.
    tfidf = artifacts["tfidf"], registries["tfidf"]
    servers.append((["named", "tfidf"], lambda: gateway(*tfidf, cpu)))
    if "minilm" in artifacts:
        minilm = artifacts["minilm"], registries["minilm"]
        servers.append((["minilm"], lambda: gateway(*minilm, cpu)))
    return servers


def build_pool(
    artifact: Path,
    registry: Path,
    dataset: RoutingDataset,
    replays: dict[str, ReplayServerProcess],
    prompts: Sequence[str],
) -> str:
    """A registry of the replayed models (recorded scores, mean costs) whose stored trade-off
    sends about a third of the benchmark's prompts to the dearest model; what it sends where.

    Calibration aims at a share of the representative prompts (estimated out of sample), which
    can differ a lot from the share of the prompts actually sent, so each candidate target is
    checked on a sample of the sent prompts and the nearest one is stored.
    """
    router = Router.load(artifact, registry)
    for model in MODELS:
        cost = float(dataset.model_costs[dataset.model_index(model)])
        add_recorded_model(router, dataset, model, cost, endpoint=replays[model].v1_url)
    X = router.embed(list(prompts[:SHARE_SAMPLE]))
    best: tuple[float, float, dict[str, float]] | None = None
    for share in np.arange(0.05, 0.96, 0.05):
        try:
            policy = calibrate(
                router, make_target(target_share=(MODELS[-1], float(share))), store=False
            )
        except CalibrationError:
            continue
        sent = Counter(d.model for d in router.route_embeddings(X, lam=policy.lam))
        shares = {m: sent[m] / len(X) for m in MODELS}
        if best is None or abs(shares[MODELS[-1]] - 1 / 3) < abs(best[2][MODELS[-1]] - 1 / 3):
            best = (float(share), policy.lam, shares)
    if best is None:
        raise CalibrationError(f"no trade-off could be calibrated for {MODELS[-1]}")
    calibrate(router, make_target(target_share=(MODELS[-1], best[0])))
    return ", ".join(f"{m} {v:.0%}" for m, v in best[2].items()) + f" (lambda {best[1]:.3g})"


def build(dataset: RoutingDataset, folder: Path, encoder: str, clusters: int) -> Path:
    """A K-means artifact on the whole data set with the given encoder."""
    out = folder / f"artifact-{encoder}"
    build_artifact(
        dataset, out, encoder=encoder, router="uniroute-kmeans", val_fraction=0.1, seed=0,
        router_params={"n_clusters": clusters},
        embedding_cache=default_cache_dir() / EMBEDDING_CACHE_SUBDIR,
    )  # fmt: skip
    return out


def write_bodies(folder: Path, prompts: Sequence[str]) -> dict[tuple[bool, bool], Path]:
    """The four JSON-lines files of request bodies: (routed or named) x (streamed or not)."""
    files = {}
    for routed in (False, True):
        for streamed in (False, True):
            path = folder / f"bodies-{'routed' if routed else 'named'}-{int(streamed)}.jsonl"
            with path.open("w") as out:
                for prompt in prompts:
                    body: dict = {
                        "model": "uniroute" if routed else NAMED,
                        "messages": [{"role": "user", "content": prompt}],
                        "max_tokens": 16,
                    }
                    if streamed:
                        body["stream"] = True
                    # json.dumps escapes every newline a prompt holds: one body, one line.
                    out.write(json.dumps(body) + "\n")
            files[(routed, streamed)] = path
    return files


# ---------------------------------------------------------------------------- the table


def added_p50(columns: dict[str, Column], key: str) -> float | None:
    """p50 at c=1 over direct's, in ms."""
    if not usable(columns, key) or not usable(columns, "direct"):
        return None
    return columns[key].phases["c1"].p50_ms - columns["direct"].phases["c1"].p50_ms


def usable(columns: dict[str, Column], key: str) -> bool:
    """Whether a column was measured."""
    return key in columns and columns[key].failure is None and bool(columns[key].phases)


def cell(column: Column, phase: str, value: Callable[[Phase], float | None], digits: int) -> str:
    """One table cell, with the phase's error count when it had errors."""
    if column.failure is not None:
        return "failed"
    result = column.phases[phase]
    if not result.requests:
        return "none completed" + (f" ({result.errors} errors)" if result.errors else "")
    figure = value(result)
    text = "—" if figure is None else f"{figure:,.{digits}f}"
    if figure is not None and result.requests < FEW_REQUESTS:
        text += f" (n={result.requests})"
    return text + (f" ({result.errors} errors)" if result.errors else "")


def table(columns: dict[str, Column]) -> str:
    """The markdown comparison table."""
    keys = list(columns)
    direct_p50 = columns["direct"].phases["c1"].p50_ms if usable(columns, "direct") else 0.0
    rows: list[tuple[str, str, Callable[[Phase], float | None], int]] = [
        ("added p50 at c=1 (ms, over direct)", "c1", lambda p: p.p50_ms - direct_p50, 2),
        ("req/s at c=64", "c64", lambda p: p.rps, 0),
        ("stream time to first byte p50 at c=1 (ms)", "ttfb", lambda p: p.p50_ms, 2),
        ("p50 at c=1 (ms)", "c1", lambda p: p.p50_ms, 2),
        ("p99 at c=1 (ms)", "c1", lambda p: p.p99_ms, 2),
        ("p50 at c=64 (ms)", "c64", lambda p: p.p50_ms, 1),
        ("stream req/s at c=64", "stream64", lambda p: p.rps, 0),
        ("CPU ms per request, c=1", "c1", lambda p: p.cpu_ms, 2),
        ("CPU ms per request, c=64", "c64", lambda p: p.cpu_ms, 2),
        ("CPU ms per request, stream c=64", "stream64", lambda p: p.cpu_ms, 2),
    ]
    lines = [
        "| | " + " | ".join(COLUMNS[k] for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for label, phase, value, digits in rows:
        cells = [cell(columns[k], phase, value, digits) for k in keys]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    errors = [
        "failed" if c.failure else str(sum(p.errors for p in c.phases.values()))
        for c in columns.values()
    ]
    lines.append("| errors, all phases | " + " | ".join(errors) + " |")
    return "\n".join(lines)


def targets(columns: dict[str, Column]) -> list[str]:
    """The issue's targets for the routed TF-IDF gateway, each PASS, FAIL or not measured."""
    out = []

    def check(
        label: str, ours: float | None, theirs: float | None, factor: float, at_most: bool
    ) -> None:
        """One target line: ours against factor x theirs."""
        if ours is None or theirs is None:
            out.append(f"  n/a   {label}: not measured")
            return
        limit = factor * theirs
        ok = ours <= limit if at_most else ours >= limit
        sign = "<=" if at_most else ">="
        ratio = f"x{ours / theirs:.2f}" if theirs else "n/a"
        out.append(
            f"  {'PASS' if ok else 'FAIL'}  {label}: {ours:,.2f} {sign} {limit:,.2f} "
            f"(ratio {ratio}, target x{factor:g})"
        )

    def rps(key: str) -> float | None:
        """A column's requests/s at c=64, if measured."""
        return columns[key].phases["c64"].rps if usable(columns, key) else None

    def ttfb(key: str) -> float | None:
        """A column's streamed time to first byte at c=1, if measured."""
        return columns[key].phases["ttfb"].p50_ms if usable(columns, key) else None

    ours = "routed TF-IDF"
    for other, name, factor in (
        ("starlette", "Starlette + httpx proxy", 0.5),
        ("litellm", "LiteLLM", 0.1),
    ):
        check(
            f"{ours} added p50 at c=1 (ms) <= {factor:g} x {name}'s",
            added_p50(columns, "tfidf"),
            added_p50(columns, other),
            factor,
            True,
        )
    for other, name, factor in (
        ("starlette", "Starlette + httpx proxy", 3.0),
        ("litellm", "LiteLLM", 10.0),
    ):
        check(
            f"{ours} req/s at c=64 >= {factor:g} x {name}'s",
            rps("tfidf"),
            rps(other),
            factor,
            False,
        )
    check(
        f"{ours} stream TTFB p50 at c=1 (ms) <= Starlette + httpx proxy's",
        ttfb("tfidf"),
        ttfb("starlette"),
        1.0,
        True,
    )
    return out


# ---------------------------------------------------------------------------- main


def choose_cpus(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """The gateway's core and the load generator's, or (None, None) when pinning is impossible."""
    available = os.sched_getaffinity(0)
    if args.no_pin:
        return None, None
    if shutil.which("taskset") is None or not {args.gateway_cpu, args.load_cpu} <= available:
        print(
            f"warning: cannot pin (cores {sorted(available)}, taskset "
            f"{'found' if shutil.which('taskset') else 'missing'}); running unpinned"
        )
        return None, None
    if args.gateway_cpu == args.load_cpu:
        raise SystemExit("--gateway-cpu and --load-cpu must differ")
    return args.gateway_cpu, args.load_cpu


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir() / "routerbench")
    parser.add_argument("--duration", type=int, default=10, help="seconds per phase (10)")
    parser.add_argument("--warmup", type=int, default=None, help="seconds of warm-up (2)")
    parser.add_argument(
        "--quick", action="store_true", help="2 s phases, 1 s warm-ups: a smoke run"
    )
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument(
        "--litellm-venv",
        type=Path,
        default=default_cache_dir() / "litellm-venv",
        help="LiteLLM's virtualenv, created on first use (.cache/litellm-venv)",
    )
    parser.add_argument("--litellm-spec", default="litellm[proxy]", help="what pip installs")
    parser.add_argument("--gateway-cpu", type=int, default=0, help="core of the server (0)")
    parser.add_argument("--load-cpu", type=int, default=1, help="load generator, upstreams (1)")
    parser.add_argument("--no-pin", action="store_true", help="run everything unpinned")
    parser.add_argument(
        "--load-generator",
        choices=("wrk", "asyncio"),
        default=None,
        help="wrk when installed, else benchmarks/proxies/loadgen.py",
    )
    parser.add_argument("--clusters", type=int, default=10, help="K of the K-means maps (10)")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="measure every column this many times, in turn; cells are medians (1)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 2
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.load_generator is None:
        args.load_generator = "wrk" if shutil.which("wrk") else "asyncio"
    return args


def print_header(setup: Setup, litellm_version: str | None, rounds: int) -> None:
    """What was run, where, and how loaded the machine was."""
    generator = setup.generator
    if generator == "wrk":
        version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
        generator += f" {version[1] if len(version) > 1 else ''}".rstrip()
    print(
        f"cores: {os.cpu_count()}; python {sys.version.split()[0]}; load generator: {generator}; "
        f"streamed TTFB: loadgen.py; LiteLLM: {litellm_version or 'skipped'}"
    )
    where = (
        f"server on core {setup.gateway_cpu}, load generator and upstreams on core {setup.load_cpu}"
        if setup.gateway_cpu is not None
        else "unpinned"
    )
    print(f"pinning: {where}; {setup.duration} s per phase after {setup.warmup} s of warm-up")
    if rounds > 1:
        print(f"every column measured {rounds} times, in turn; the cells are medians")
    print("load average at start (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


def main(argv: list[str] | None = None) -> int:
    """Build the artifacts, start the upstreams, measure every column, print the table."""
    args = parse_args(argv)
    gateway_cpu, load_cpu = choose_cpus(args)
    litellm_exe, litellm_version = (None, None)
    if not args.skip_litellm:
        litellm_exe, litellm_version = ensure_litellm(args.litellm_venv, args.litellm_spec)
    dataset = load_dataset(args.data, "routerbench")
    prompts = list(dict.fromkeys(str(t) for t in dataset.prompts))
    # A fixed shuffle: consecutive requests do not walk the data set's task order.
    prompts = [prompts[i] for i in np.random.default_rng(0).permutation(len(prompts))]
    columns: dict[str, Column] = {}
    with tempfile.TemporaryDirectory(prefix="uniroute-proxy-bench-") as tmp:
        folder = Path(tmp)
        script = folder / "post.lua"
        script.write_text(WRK_SCRIPT)
        setup = Setup(
            generator=args.load_generator,
            bodies=write_bodies(folder, prompts),
            script=script,
            gateway_cpu=gateway_cpu,
            load_cpu=load_cpu,
            duration=args.duration,
            warmup=args.warmup,
        )
        print_header(setup, litellm_version, args.rounds)
        print(f"data: {dataset.summary()}; {len(prompts)} distinct prompts, cycled")
        started = time.perf_counter()
        encoders = ["tfidf"] + ([] if args.skip_minilm else ["minilm"])
        artifacts = {e: build(dataset, folder, e, args.clusters) for e in encoders}
        print(
            f"built the {' and '.join(encoders)} artifacts in {time.perf_counter() - started:.1f} s"
        )
        if load_cpu is not None:
            # From here on this process, and every child it starts, shares the upstreams' core
            # (a server under test is moved to its own core by taskset).
            os.sched_setaffinity(0, {load_cpu})
        replays = start_replays(args.data, MODELS)
        try:
            registries: dict[str, Path] = {}
            for encoder, artifact in artifacts.items():
                registries[encoder] = folder / f"registry-{encoder}.db"
                shares = build_pool(artifact, registries[encoder], dataset, replays, prompts)
                print(f"{encoder} pool, share of the prompts routed to each model: {shares}")
            servers = servers_under_test(
                replays[NAMED].v1_url, folder, artifacts, registries, litellm_exe, gateway_cpu
            )
            rounds: dict[str, list[Column]] = {}
            for number in range(1, args.rounds + 1):
                print(
                    f"\nround {number} of {args.rounds} (c1, c64: plain; ttfb: streamed at c=1; "
                    "stream64: streamed at c=64); load average {:.2f} {:.2f} {:.2f}".format(
                        *os.getloadavg()
                    )
                )
                for keys, server in servers:
                    for key, column in measure_server(setup, keys, server, replays).items():
                        rounds.setdefault(key, []).append(column)
            columns = {key: Column.of_rounds(measured) for key, measured in rounds.items()}
        finally:
            for replay in replays.values():
                replay.stop()

    print("\nupstream requests per column (all phases, warm-ups and checks included):")
    for key, column in columns.items():
        hits = ", ".join(f"{m} {n}" for m, n in column.upstream_hits.items()) or "—"
        print(f"  {COLUMNS[key]:<46} {hits}")
    print()
    print(table(columns))
    print("\ntargets (UniRoute routed, TF-IDF, against the other columns of this run):")
    print("\n".join(targets(columns)))
    errors = sum(p.errors for c in columns.values() for p in c.phases.values())
    failed = [COLUMNS[k] for k, c in columns.items() if c.failure]
    print(
        f"\nerrors over all phases: {errors}" + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    print("load average at end (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 1 if errors or failed else 0


if __name__ == "__main__":
    sys.exit(main())
