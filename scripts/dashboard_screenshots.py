"""Regenerate the dashboard screenshots in docs/img from a live gateway.

    .venv/bin/python scripts/dashboard_screenshots.py [--data DIR] [--out docs/img]

Builds a small ARC artifact (the test suite's recipe: tf-idf + K-means, K=6) from the shared
RouterBench data, starts a gateway with the dashboard on in front of replay upstreams of the
recorded answers (``uniroute.testing.live_dashboard``), sends it routed traffic over a few
minutes (some of it failing over from a flaky upstream, so the fallback counters move),
onboards one unseen model from its endpoint and starts onboarding another from a slowed one,
and takes a 1280-wide screenshot of each view in headless Chromium: dashboard-pool.png,
-estimates, -tradeoff, -traffic and -jobs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.testing.harness import wait_for_job, wait_until
from uniroute.testing.live_dashboard import (
    MID,
    TO_ONBOARD,
    LiveDashboard,
    build_arc_artifact,
    live_dashboard,
    start_chromium,
)

REPO = Path(__file__).resolve().parent.parent
WIDTH = 1280
#: An ARC model the artifact never saw (one of its holdouts): onboarded before the screenshots.
UNSEEN = "claude-instant-v1"


def send_traffic(live: LiveDashboard, prompts: Sequence[str], minutes: int) -> None:
    """Send the prompts through the gateway in ``minutes`` bursts, one per minute bucket,
    with MID's upstream failing a share of its requests (answered by a fallback model)."""
    httpx.post(f"{live.upstreams[MID]}/admin/fault", json={"fail_rate": 0.08, "seed": 1})
    per_burst = max(1, len(prompts) // minutes)
    for burst in range(minutes):
        if burst:
            time.sleep(60 - time.time() % 60 + 0.5)  # into the next minute's bucket
        for prompt in prompts[burst * per_burst : (burst + 1) * per_burst]:
            live.chat(prompt)
        print(f"  burst {burst + 1}/{minutes} sent", flush=True)
    httpx.post(f"{live.upstreams[MID]}/admin/fault", json={"fail_rate": 0.0})


def start_onboarding(live: LiveDashboard, model: str, cost: float, delay_ms: float = 0) -> str:
    """Start onboarding ``model`` from its replay endpoint (each answer delayed by
    ``delay_ms``, so that the job shows progress); its poll path."""
    upstream = live.upstreams[model]
    httpx.post(f"{upstream}/admin/fault", json={"delay_ms": delay_ms})
    body = {
        "name": model,
        "endpoint": f"{upstream}/v1",
        "onboard": True,
        "cost": cost,
        "onboarding": {"concurrency": 2},
    }
    response = httpx.post(f"{live.url}/admin/models", json=body, headers=live.admin_headers())
    response.raise_for_status()
    return str(response.json()["poll"])


def job_fraction(live: LiveDashboard, poll: str) -> float:
    """How far the job is (0 until it reports)."""
    job = httpx.get(f"{live.url}{poll}", headers=live.admin_headers()).json()["job"]
    return float(job["progress"]["fraction"] or 0.0)


def screenshot(driver, live: LiveDashboard, view: str, path: Path) -> None:
    """Open a view, wait until it is drawn, and save the whole page, 1280 wide."""
    from selenium.webdriver.common.by import By

    viewport(driver, 900)
    driver.get("about:blank")
    driver.get(f"{live.ui_url}#{view}")
    section = driver.find_element(By.CSS_SELECTOR, f'[data-testid="view-{view}"]')
    wait_until(lambda: section.get_attribute("data-state") == "ready", 20, f"{view} not drawn")
    time.sleep(0.6)  # let the progress bars' transitions settle
    height = driver.execute_script("return document.documentElement.scrollHeight")
    viewport(driver, max(640, int(height)))
    time.sleep(0.3)
    driver.save_screenshot(str(path))
    print(f"  wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", flush=True)


def viewport(driver, height: int) -> None:
    """Make the page's viewport exactly WIDTH x ``height`` CSS pixels (the window's own size
    includes its frame in headless mode too)."""
    metrics = {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def sign_in(driver, live: LiveDashboard) -> None:
    """Type the admin token into the page's form (kept in sessionStorage from then on)."""
    from selenium.webdriver.common.by import By

    driver.get(live.ui_url)
    driver.find_element(By.CSS_SELECTOR, '[data-testid="login-token"]').send_keys(live.token)
    driver.find_element(By.CSS_SELECTOR, '[data-testid="login-submit"]').click()
    login = driver.find_element(By.CSS_SELECTOR, '[data-testid="login"]')
    wait_until(lambda: not login.is_displayed(), 20, "sign-in did not complete")


def main(argv: Sequence[str] | None = None) -> int:
    """Build, serve, send traffic, screenshot; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir() / "routerbench")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--minutes", type=int, default=3, help="minutes of traffic (bursts)")
    args = parser.parse_args(argv)
    data_file = args.data / "arc_challenge_test.csv"
    if not data_file.is_file():
        print(f"no RouterBench ARC data at {data_file} (give --data)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(data_file, "routerbench")
    prompts = list(dict.fromkeys(str(p) for p in dataset.prompts))
    with tempfile.TemporaryDirectory(prefix="uniroute-screenshots-") as tmp:
        folder = Path(tmp)
        print("building the ARC artifact", flush=True)
        artifact_dir = build_arc_artifact(dataset, folder / "artifact")
        spare = (UNSEEN, TO_ONBOARD)
        # A breaker that tolerates the flaky upstream's few failures in a row: the pool view
        # shows every model up, and the fallbacks are the retries of single failures.
        with live_dashboard(
            artifact_dir, dataset, folder / "live", spare_upstreams=spare,
            breaker_failure_threshold=8,
        ) as live:  # fmt: skip
            print(f"gateway at {live.url}; sending traffic for {args.minutes} min", flush=True)
            send_traffic(live, prompts[:150], args.minutes)
            print(f"onboarding {UNSEEN}, priced per token", flush=True)
            wait_for_job(live.url, start_onboarding(live, UNSEEN, 0.0003), live.admin_headers())
            price = {"cost_per_1m_input": 0.8, "cost_per_1m_output": 2.4}
            path = f"/admin/models/{UNSEEN}/cost"
            httpx.post(f"{live.url}{path}", json=price, headers=live.admin_headers())
            driver = start_chromium(folder / "profile", WIDTH, 900)
            try:
                sign_in(driver, live)
                for view in ("pool", "estimates", "tradeoff", "traffic"):
                    screenshot(driver, live, view, args.out / f"dashboard-{view}.png")
                poll = start_onboarding(live, TO_ONBOARD, 0.0008, delay_ms=300)
                wait_until(lambda: job_fraction(live, poll) >= 0.3, 60, "onboarding stalled")
                screenshot(driver, live, "jobs", args.out / "dashboard-jobs.png")
                # Let it finish: a gateway stopped under a running job logs it as failed.
                wait_for_job(live.url, poll, live.admin_headers(), timeout=120)
            finally:
                driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
