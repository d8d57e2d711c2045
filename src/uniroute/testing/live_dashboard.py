"""A live gateway with the dashboard on, in threads of this process, for browser tests and
screenshots.

It stands in front of replay upstreams (:func:`~uniroute.testing.replay.create_replay_app`)
that answer with the answers RouterBench really recorded for each model, over a registry whose
models carry their recorded scores on the artifact's representative prompts and round per-query
prices, calibrated so that more than one model gets traffic. The admin token is put in an
environment variable of this process (the one the config's ``admin_token_env`` names) for as
long as the gateway runs; ``/v1`` needs no client key unless ``client_keys`` are given.

The browser test (``tests/gateway/test_dashboard_browser.py``) uses the session's shared ARC
artifact; ``scripts/dashboard_screenshots.py`` builds a small one of its own with
:func:`build_arc_artifact`, the recipe of the test suite's ``arc_artifact`` fixture.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from uniroute.data.dataset import RoutingDataset
from uniroute.deployment import Router
from uniroute.gateway.app import create_app
from uniroute.gateway.config import GatewayConfig
from uniroute.testing.harness import build_arc_test_artifact, recorded_pool, serve_in_thread
from uniroute.testing.replay import create_replay_app

CHEAP = "mistralai/mistral-7b-chat"
MID = "mistralai/mixtral-8x7b-chat"
EXPENSIVE = "gpt-4-1106-preview"
#: A training model of the artifact left out of the starting pool: the one to onboard.
TO_ONBOARD = "zero-one-ai/Yi-34B-Chat"
#: The starting pool and its per-query prices (those of the gateway tests).
POOL_COSTS: dict[str, float] = {CHEAP: 0.0001, MID: 0.0004, EXPENSIVE: 0.005}
#: The models the ARC artifact leaves out of its training (as tests/conftest.py does).
ARC_HOLDOUT_MODELS = ("claude-instant-v1", "claude-v2", "gpt-4-1106-preview")

ADMIN_TOKEN = "dashboard-admin-4f0c2a9e"
#: Prefixes of the environment variables holding each gateway's admin token and client keys
#: (the latter unset unless client keys are given); numbered per gateway, so that two live
#: gateways in one process never read each other's.
ADMIN_TOKEN_ENV = "UNIROUTE_LIVE_DASHBOARD_ADMIN_TOKEN"
CLIENT_KEYS_ENV = "UNIROUTE_LIVE_DASHBOARD_CLIENT_KEYS"
_gateway_numbers = itertools.count(1)


@dataclass
class LiveDashboard:
    """A running gateway with the dashboard on, and the replay upstreams behind it."""

    url: str
    token: str
    router: Router
    #: Base URLs (without ``/v1``) of the replay upstreams, by model, the one to onboard included.
    upstreams: dict[str, str] = field(default_factory=dict)
    #: The client key that ``route`` and ``chat`` send (None: the gateway needs none).
    client_key: str | None = None

    @property
    def ui_url(self) -> str:
        """The dashboard page."""
        return f"{self.url}/ui"

    def admin_headers(self) -> dict[str, str]:
        """Headers of an admin API call."""
        return {"Authorization": f"Bearer {self.token}"}

    def client_headers(self) -> dict[str, str]:
        """Headers of a /v1 call."""
        return {"Authorization": f"Bearer {self.client_key}"} if self.client_key else {}

    def route(self, prompt: str) -> str:
        """The model the gateway routes ``prompt`` to (``POST /v1/route``)."""
        body = {"model": "uniroute", "messages": [{"role": "user", "content": prompt}]}
        response = httpx.post(
            f"{self.url}/v1/route", json=body, headers=self.client_headers(), timeout=30
        )
        response.raise_for_status()
        return str(response.json()["model"])

    def chat(self, prompt: str) -> httpx.Response:
        """Send one routed chat completion through the gateway; its response."""
        body = {"model": "uniroute", "messages": [{"role": "user", "content": prompt}]}
        return httpx.post(
            f"{self.url}/v1/chat/completions", json=body, headers=self.client_headers(), timeout=60
        )

    def admin_models(self) -> dict[str, dict[str, Any]]:
        """``GET /admin/models``, by model name."""
        response = httpx.get(f"{self.url}/admin/models", headers=self.admin_headers(), timeout=30)
        response.raise_for_status()
        return {entry["name"]: entry for entry in response.json()["models"]}


def build_arc_artifact(dataset: RoutingDataset, folder: Path) -> Path:
    """The test suite's ARC artifact, built in ``folder``; its directory."""
    return build_arc_test_artifact(dataset, folder, ARC_HOLDOUT_MODELS)


@contextmanager
def live_dashboard(
    artifact_dir: Path,
    dataset: RoutingDataset,
    folder: Path,
    *,
    costs: Mapping[str, float] | None = None,
    spare_upstreams: Sequence[str] = (TO_ONBOARD,),
    token: str = ADMIN_TOKEN,
    client_keys: Sequence[str] = (),
    **config: Any,
) -> Iterator[LiveDashboard]:
    """Serve replay upstreams for the pool (``costs``: model -> $/query, default
    ``POOL_COSTS``) and for ``spare_upstreams`` (not in the pool, to onboard), a registry in
    ``folder`` and a gateway with the dashboard on over it; yields them, stops them on exit.

    ``client_keys``, when given, are the gateway's static client keys (the first one is the
    LiveDashboard's ``client_key``). Extra keyword arguments are ``GatewayConfig`` fields (e.g.
    ``dashboard_client_keys=True`` lets those keys open the read-only views).
    """
    costs = dict(POOL_COSTS if costs is None else costs)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    number = next(_gateway_numbers)
    admin_env, keys_env = f"{ADMIN_TOKEN_ENV}_{number}", f"{CLIENT_KEYS_ENV}_{number}"
    saved = {name: os.environ.get(name) for name in (admin_env, keys_env)}
    with ExitStack() as stack:
        stack.callback(_restore_env, saved)
        os.environ.pop(keys_env, None)
        if client_keys:
            os.environ[keys_env] = ",".join(client_keys)
        os.environ[admin_env] = token
        upstreams = {
            model: stack.enter_context(serve_in_thread(create_replay_app(dataset, model)))
            for model in [*costs, *spare_upstreams]
        }
        # As in the gateway tests: a target above the cheapest price mixes the cheap and
        # middle models, so the traffic view has more than one model to show.
        router = recorded_pool(
            artifact_dir, folder / "registry.db", dataset,
            {model: f"{upstreams[model]}/v1" for model in costs}, costs,
            with_answers=True, target_cost=3 * min(costs.values()),
        )  # fmt: skip
        settings: dict[str, Any] = {
            "dashboard": True,
            "admin_token_env": admin_env,
            "client_keys_env": keys_env,
            "registry_poll_s": 0.1,
            **config,
        }
        url = stack.enter_context(serve_in_thread(create_app(router, GatewayConfig(**settings))))
        yield LiveDashboard(
            url=url,
            token=token,
            router=router,
            upstreams=upstreams,
            client_key=client_keys[0] if client_keys else None,
        )


# ---------------------------------------------------------------------------- the browser
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = "run `bash scripts/install-system-packages.sh` (chromium and chromium-driver)"


def missing_browser() -> list[str]:
    """Which of Debian's chromium and chromedriver binaries are missing (none: [])."""
    return [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]


def start_chromium(profile_dir: Path, width: int = 1280, height: int = 900) -> Any:
    """Debian's Chromium, headless, driven through its own chromedriver (a Selenium
    ``webdriver.Chrome``); ``profile_dir`` is its throwaway user data folder.

    Selenium Manager is kept offline (``SE_OFFLINE``), so nothing is ever downloaded; missing
    binaries raise FileNotFoundError naming the install script.
    """
    missing = missing_browser()
    if missing:
        raise FileNotFoundError(f"{' and '.join(missing)} not found: {INSTALL_HINT}")
    from selenium import webdriver

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={profile_dir}", f"--window-size={width},{height}",
    ):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(service=service, options=options)


def _restore_env(saved: Mapping[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
