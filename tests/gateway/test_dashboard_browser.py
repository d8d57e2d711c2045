"""The dashboard end to end: Debian's headless Chromium, driven by Selenium, against a live
gateway with the dashboard on, in front of replay upstreams of real RouterBench ARC answers.

Nothing of ours is mocked: the page is the one the gateway serves at /ui, its data comes from
the gateway's /ui/api and /admin routes, and what the page changes is checked at the gateway
itself (``/v1/route``, ``GET /admin/models``, ``/v1/chat/completions``). The gateway and its
upstreams run in threads of this process (``uniroute.testing.live_dashboard``); the tests
share one browser and run in order (the later ones change the pool). Chromium and chromedriver
are Debian's (``scripts/install-system-packages.sh``); without them the tests fail, saying so.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from uniroute.testing.live_dashboard import (
    CHEAP,
    EXPENSIVE,
    INSTALL_HINT,
    MID,
    TO_ONBOARD,
    LiveDashboard,
    live_dashboard,
    missing_browser,
    start_chromium,
)

#: About 20 s in all (a browser, two gateways, a 5 s traffic refresh, an onboarding run): in
#: `make test`, not in plain `pytest`.
pytestmark = pytest.mark.slow(reason="headless Chromium against two live gateways, ~20 s")

WAIT_S = 15


@pytest.fixture(scope="module")
def live(tmp_path_factory, artifact_dir, arc_dataset) -> Iterator[LiveDashboard]:
    with live_dashboard(artifact_dir, arc_dataset, tmp_path_factory.mktemp("dashboard")) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[WebDriver]:
    missing = missing_browser()
    if missing:
        pytest.fail(
            f"the dashboard's browser tests need {' and '.join(missing)}: {INSTALL_HINT}",
            pytrace=False,
        )
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: WebDriver, live: LiveDashboard) -> WebDriver:
    """The browser, signed in to the live gateway's dashboard (its token in sessionStorage)."""
    browser.get(live.ui_url)

    def settled(driver: WebDriver) -> bool:
        return find(driver, "login").is_displayed() or bool(find(driver, "session-role").text)

    wait(browser, settled, "the page neither signed in nor asked for a token")
    if find(browser, "login").is_displayed():
        sign_in(browser, live.token)
    return browser


# ---------------------------------------------------------------------------- helpers
def by_testid(testid: str) -> tuple[str, str]:
    return By.CSS_SELECTOR, f'[data-testid="{testid}"]'


def find(driver: WebDriver, testid: str) -> WebElement:
    """The element with this data-testid, once it is on the page."""
    return wait(driver, lambda d: d.find_element(*by_testid(testid)), f"no {testid!r}")


def wait(driver: WebDriver, condition, message: str, timeout: float = WAIT_S):
    """``condition(driver)`` once true; a view redrawn meanwhile (stale elements) is retried."""
    ignored = (NoSuchElementException, StaleElementReferenceException)
    try:
        return WebDriverWait(driver, timeout, ignored_exceptions=ignored).until(condition)
    except TimeoutException:
        raise AssertionError(f"{message} (within {timeout} s)") from None


def open_view(driver: WebDriver, live: LiveDashboard, view: str) -> WebElement:
    """Load the page at a view's hash (signed in already: the token is in sessionStorage,
    which outlives the page) and wait until the view is drawn."""
    driver.get("about:blank")  # a full load, not a hash change within the page
    driver.get(f"{live.ui_url}#{view}")
    section = find(driver, f"view-{view}")
    wait(driver, lambda d: section.get_attribute("data-state") == "ready", f"{view} not drawn")
    assert section.is_displayed()
    return section


def sign_in(driver: WebDriver, token: str) -> None:
    """Type a token into the page's form and wait until the form has gone."""
    box = find(driver, "login-token")
    box.clear()
    box.send_keys(token)
    find(driver, "login-submit").click()
    wait(driver, lambda d: not find(d, "login").is_displayed(), "the form did not go away")


def confirm(driver: WebDriver) -> None:
    """Accept the page's confirm box."""
    button = find(driver, "confirm-ok")
    wait(driver, lambda d: button.is_displayed(), "no confirm box")
    button.click()


def total_requests(driver: WebDriver) -> int:
    return int(find(driver, "traffic-total-requests").text.replace(",", ""))


# ---------------------------------------------------------------------------- the tests
def test_the_token_form_signs_in_and_the_pool_table_lists_the_pool(browser, live) -> None:
    browser.get(live.ui_url)
    browser.execute_script("sessionStorage.clear()")  # signed out, whatever ran before
    browser.get("about:blank")
    browser.get(live.ui_url)
    token = find(browser, "login-token")
    assert token.is_displayed()
    # A wrong token is refused with the gateway's own message, and the form stays.
    token.send_keys("not-the-token")
    find(browser, "login-submit").click()
    error = find(browser, "login-error")
    wait(browser, lambda d: error.is_displayed() and "admin" in error.text, "no refusal shown")
    assert "Traceback" not in error.text and "{" not in error.text
    sign_in(browser, live.token)
    assert find(browser, "session-role").text == "admin"
    registered = live.admin_models()
    assert len(registered) == 3
    for name, record in registered.items():
        row = find(browser, f"pool-row-{name}")
        assert name in row.text and "$" in row.text
        assert find(browser, f"pool-toggle-{name}").get_attribute("aria-checked") == "true"
        # How and when it joined: the registry's source and creation time (to the minute).
        assert record["source"] in row.text
        day, clock = record["created_at"][:10], record["created_at"][11:16]
        assert find(browser, f"pool-added-{name}").text == f"added {day} {clock} UTC"
    # Prices as the router reckons them, per query.
    assert find(browser, f"pool-cost-{CHEAP}").text == "$0.0001"


def test_the_tabs_switch_views_and_set_the_hash(page, live) -> None:
    open_view(page, live, "pool")
    for view in ("estimates", "tradeoff", "traffic", "jobs", "pool"):
        find(page, f"tab-{view}").click()
        section = find(page, f"view-{view}")
        wait(page, lambda d, s=section: s.get_attribute("data-state") == "ready", view)
        assert page.current_url.endswith(f"#{view}") and section.is_displayed()
        others = [v for v in ("pool", "estimates", "tradeoff", "traffic", "jobs") if v != view]
        assert not any(find(page, f"view-{other}").is_displayed() for other in others)


@pytest.mark.parametrize("view", ["pool", "estimates", "tradeoff", "traffic", "jobs"])
def test_each_view_is_drawn_well_within_a_second_of_opening_the_page(page, live, view) -> None:
    section = open_view(page, live, view)
    # From the page's navigation start to the view drawn with the gateway's data, on loopback.
    assert int(section.get_attribute("data-ready-ms")) < 1000


def test_the_heat_map_has_a_cell_per_cluster_and_model(page, live) -> None:
    truth = httpx.get(f"{live.url}/ui/api/estimates", headers=live.admin_headers()).json()
    assert truth["available"] and len(truth["clusters"]) == 6 and len(truth["models"]) == 3
    open_view(page, live, "estimates")
    cells = page.find_elements(By.CSS_SELECTOR, '[data-testid^="heatmap-cell-"]')
    assert len(cells) == len(truth["clusters"]) * len(truth["models"])
    for i, cluster in enumerate(truth["clusters"]):
        for k, model in enumerate(truth["models"]):
            cell = find(page, f"heatmap-cell-{cluster['cluster']}-{model}")
            evidence = truth["evidence"][i][k]
            if evidence == 0:
                assert "no-evidence" in cell.get_attribute("class")
                assert "no evidence" in cell.text
            else:
                shown = f"{truth['error'][i][k]:.2f} · {evidence}/{cluster['n_prompts']}"
                assert cell.text == shown
                assert "no-evidence" not in cell.get_attribute("class")
    # Each cluster is labelled by its own most typical prompt (the shared few-shot preamble of
    # ARC's prompts cut by the gateway), so no two labels read the same.
    labels = []
    for cluster in truth["clusters"]:
        label = find(page, f"heatmap-cluster-{cluster['cluster']}").text
        if cluster["typical_prompts"]:
            assert cluster["typical_prompts"][0][:40] in label
            labels.append(label)
    assert len(labels) >= 2 and len(set(labels)) == len(labels)


def test_moving_the_slider_changes_the_expected_cost_and_quality(page, live) -> None:
    truth = httpx.get(f"{live.url}/ui/api/tradeoff", headers=live.admin_headers()).json()
    points = truth["points"]
    assert truth["available"] and len(points) >= 3
    open_view(page, live, "tradeoff")
    slider = find(page, "tradeoff-slider")
    before = find(page, "tradeoff-cost").text, find(page, "tradeoff-quality").text
    assert before[0].startswith("$")
    slider.send_keys(Keys.END)  # the dearest point: the best quality
    wait(page, lambda d: find(d, "tradeoff-quality").text != before[1], "quality unchanged")
    assert find(page, "tradeoff-cost").text != before[0]
    assert find(page, "tradeoff-quality").text == f"{points[-1]['quality']:.3f}"
    # Set by value, as a script would: the same figures follow the input event.
    page.execute_script(
        "arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))", slider
    )
    assert find(page, "tradeoff-quality").text == f"{points[0]['quality']:.3f}"
    for model in truth["models"]:
        share = points[0]["share"].get(model, 0.0)
        assert find(page, f"tradeoff-share-{model}").text.endswith(f"{share * 100:.1f}%")


def test_storing_a_point_as_the_default_policy_recalibrates(page, live) -> None:
    truth = httpx.get(f"{live.url}/ui/api/tradeoff", headers=live.admin_headers()).json()
    index = next(i for i, p in enumerate(truth["points"]) if set(p["share"]) == {MID})
    assert abs(truth["calibrated"]["cost"] - truth["points"][index]["cost"]) > 1e-9
    open_view(page, live, "tradeoff")
    slider = find(page, "tradeoff-slider")
    page.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))",
        slider,
        index,
    )
    stored = find(page, "tradeoff-stored").text
    find(page, "tradeoff-store").click()
    confirm(page)
    wait(page, lambda d: find(d, "tradeoff-stored").text != stored, "stored point not shown")
    policy = httpx.get(f"{live.url}/ui/api/pool", headers=live.admin_headers()).json()["policy"]
    assert policy["expected_cost"] == pytest.approx(truth["points"][index]["cost"], rel=1e-6)
    assert f"quality {policy['expected_quality']:.3f}" in find(page, "tradeoff-stored").text


def test_disabling_a_model_in_the_pool_view_takes_it_out_of_routing(
    page, live, unique_prompts
) -> None:
    # A prompt the router sends to MID now, so that the check below can fail.
    prompt = next((p for p in unique_prompts[:60] if live.route(p) == MID), None)
    assert prompt is not None, f"no prompt among the first 60 is routed to {MID}"
    open_view(page, live, "pool")
    _flip_toggle(page, MID, to="false")
    assert live.admin_models()[MID]["enabled"] is False
    assert live.route(prompt) != MID
    assert find(page, f"pool-health-{MID}").text == "disabled"
    # And back on, through the same toggle.
    _flip_toggle(page, MID, to="true")
    assert live.admin_models()[MID]["enabled"] is True
    assert live.route(prompt) == MID


def _flip_toggle(page: WebDriver, model: str, to: str) -> None:
    """Click a model's enable toggle, confirm, and wait until it shows ``aria-checked=to``."""
    find(page, f"pool-toggle-{model}").click()
    confirm(page)
    wait(
        page,
        lambda d: find(d, f"pool-toggle-{model}").get_attribute("aria-checked") == to,
        f"the toggle does not show {model} {'enabled' if to == 'true' else 'disabled'}",
    )


def test_the_traffic_counters_move_with_routed_requests(page, live, unique_prompts) -> None:
    open_view(page, live, "traffic")
    before = total_requests(page)
    for prompt in unique_prompts[100:104]:
        response = live.chat(prompt)
        assert response.status_code == 200, response.text
    # The view refreshes itself every 5 s.
    wait(page, lambda d: total_requests(d) >= before + 4, "the request count did not grow")
    shares = page.find_elements(By.CSS_SELECTOR, '[data-testid^="traffic-share-"]')
    assert shares and all(re.search(r"\d+ · \d+\.\d%$", share.text) for share in shares)
    # The day's window holds the same requests, in bigger buckets.
    hour = total_requests(page)
    find(page, "traffic-window-day").click()
    wait(
        page,
        lambda d: find(d, "traffic-window-day").get_attribute("aria-pressed") == "true",
        "the day window is not shown",
    )
    assert total_requests(page) >= hour


def test_a_price_set_per_million_tokens_reaches_the_registry(page, live) -> None:
    open_view(page, live, "pool")
    find(page, f"pool-price-{EXPENSIVE}").click()
    mode = find(page, f"price-mode-{EXPENSIVE}")
    mode.find_element(By.CSS_SELECTOR, 'option[value="tokens"]').click()
    for field, value in (("input", "10"), ("output", "30")):
        box = find(page, f"price-{field}-{EXPENSIVE}")
        box.clear()
        box.send_keys(value)
    find(page, f"price-save-{EXPENSIVE}").click()
    confirm(page)
    wait(page, lambda d: "$10.00 · $30.00" in find(d, f"pool-row-{EXPENSIVE}").text, "no prices")
    record = live.admin_models()[EXPENSIVE]
    assert record["cost_per_1k_input"] == pytest.approx(0.01)
    assert record["cost_per_1k_output"] == pytest.approx(0.03)
    assert record["cost_per_query"] is None
    shown = httpx.get(f"{live.url}/ui/api/pool", headers=live.admin_headers()).json()
    cost = next(m for m in shown["models"] if m["name"] == EXPENSIVE)["cost_per_query"]
    assert find(page, f"pool-cost-{EXPENSIVE}").text == f"${cost:.3g}"


def test_onboarding_from_the_form_shows_the_job_until_the_model_is_routable(page, live) -> None:
    open_view(page, live, "pool")
    details = find(page, "onboard")
    details.find_element(By.TAG_NAME, "summary").click()
    find(page, "onboard-name").send_keys(TO_ONBOARD)
    find(page, "onboard-endpoint").send_keys(f"{live.upstreams[TO_ONBOARD]}/v1")
    find(page, "onboard-cost").send_keys("0.0008")
    find(page, "onboard-submit").click()
    confirm(page)
    wait(page, lambda d: d.current_url.endswith("#jobs"), "not taken to the jobs view")
    job = wait(
        page,
        lambda d: d.find_element(By.CSS_SELECTOR, '[data-testid^="job-status-"]'),
        "no job shown",
    )
    assert TO_ONBOARD in find(page, "jobs-list").text
    # Polled every second while it runs, until it has succeeded.
    job_id = job.get_attribute("data-testid").removeprefix("job-status-")
    wait(
        page,
        lambda d: find(d, f"job-status-{job_id}").text == "succeeded",
        "the job did not succeed",
        timeout=60,
    )
    assert find(page, f"job-progress-{job_id}").get_attribute("aria-valuenow") == "100"
    assert live.admin_models()[TO_ONBOARD]["servable"] is True


def test_a_client_key_opens_the_read_only_views_without_admin_actions(
    browser, tmp_path_factory, artifact_dir, arc_dataset
) -> None:
    folder = tmp_path_factory.mktemp("dashboard-viewer")
    key = "client-key-for-the-dashboard-3b7e"
    with live_dashboard(
        artifact_dir, arc_dataset, folder, spare_upstreams=(), client_keys=[key],
        dashboard_client_keys=True,
    ) as viewer:  # fmt: skip
        browser.get(viewer.ui_url)
        sign_in(browser, key)
        wait(browser, lambda d: find(d, "session-role").text == "read only", "not a viewer")
        toggle = find(browser, f"pool-toggle-{CHEAP}")
        assert toggle.get_attribute("disabled") is not None
        assert not find(browser, f"pool-price-{CHEAP}").is_displayed()
        assert not find(browser, "onboard").is_displayed()
        open_view(browser, viewer, "tradeoff")
        assert find(browser, "tradeoff-slider").is_displayed()
        assert not find(browser, "tradeoff-store").is_displayed()
        open_view(browser, viewer, "jobs")
        assert find(browser, "jobs-empty").is_displayed()
        open_view(browser, viewer, "traffic")
        assert find(browser, "traffic-total-requests").text == "0"


def test_the_page_logged_no_script_error(browser) -> None:
    errors = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "401" not in entry["message"]
    ]
    assert errors == []
