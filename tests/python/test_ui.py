"""The web UI in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`,
which scripts/setup installs) driven over WebDriver against the real `quorate serve` with
simulated models (tests/python/ui_stack.py). Screenshots of each page are saved under
$QUORATE_UI_SHOTS (default target/ui-screenshots) as test artifacts."""

import os
import pathlib
import shutil
import tempfile

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from ui_stack import ROOT, Stack

SHOTS = pathlib.Path(os.environ.get("QUORATE_UI_SHOTS", ROOT / "target" / "ui-screenshots"))
KEY = "sk-ui-browser"
WAIT_S = 20


@pytest.fixture(scope="module")
def stack():
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(tmp)
        try:
            yield stack
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def keyed_stack():
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(tmp, keys=[KEY])
        try:
            yield stack
        finally:
            stack.stop()


def _program(*names):
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"none of {names} on PATH: run scripts/setup (installs chromium and chromium-driver)")


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = _program("chromium", "chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver is the Debian package's: Selenium must not try to download one.
    driver = webdriver.Chrome(service=Service(_program("chromedriver")), options=options)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def wait(browser, check, message):
    return WebDriverWait(browser, WAIT_S).until(lambda _: check(), message=message)


def find(browser, css):
    return browser.find_element(By.CSS_SELECTOR, css)


def find_all(browser, css):
    return browser.find_elements(By.CSS_SELECTOR, css)


def shoot(browser, name):
    """The whole page: the window is stretched to the page's height for the shot."""
    width = browser.get_window_size()["width"]
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, min(height + 100, 6000))
    browser.save_screenshot(str(SHOTS / f"{name}.png"))
    browser.set_window_size(width, 1000)


def no_script_ran(browser):
    assert browser.execute_script("return window.__pwned === undefined"), "model output ran as script"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    # A blocked inline handler is reported by the policy; nothing else may fail.
    assert all("Content Security Policy" in e["message"] for e in errors), errors


def choose(browser, css, value):
    wait(browser, lambda: any(o.get_attribute("value") == value for o in find_all(browser, f"{css} option")),
         f"{css} has no option {value}")
    Select(find(browser, css)).select_by_value(value)


def run_fusion(browser, base, members, strategy=""):
    browser.get(base + "/")
    choose(browser, "#mode", "fusion")
    choose(browser, "#preset", "")
    choose(browser, "#strategy", strategy)
    while len(find_all(browser, "#panel .member-model")) < len(members):
        find(browser, "#add-member").click()
    for select, model in zip(find_all(browser, "#panel .member-model"), members):
        wait(browser, lambda: len(Select(select).options) > 1, "member models not loaded")
        Select(select).select_by_value(model)
    choose(browser, "#judge", "sim/judge")
    choose(browser, "#synthesizer", "sim/synth")
    find(browser, "#question").send_keys("What causes tides?")
    find(browser, "#run").click()
    wait(browser, lambda: "$" in find(browser, "#totals").text, "the run never finished")


def member(browser, slot):
    return find(browser, f'#members .member[data-slot="{slot}"]')


def test_a_fusion_fills_three_columns_the_analysis_and_a_cited_answer(browser, stack):
    base = f"http://{stack.addr}"
    run_fusion(browser, base, ["sim/alpha", "sim/beta", "sim/gamma"])
    columns = find_all(browser, "#members .member")
    assert len(columns) == 3
    for slot, model in enumerate(["sim/alpha", "sim/beta", "sim/gamma"]):
        column = member(browser, slot)
        assert model in column.text
        assert "done" in column.find_element(By.CSS_SELECTOR, ".status").text
    assert "web_search" in member(browser, 0).find_element(By.CSS_SELECTOR, ".tools").text

    # The contradictions table: a column per model, each stance under the model that took it.
    table = find(browser, "#contradictions table")
    headers = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    row = [td.text for td in table.find_elements(By.CSS_SELECTOR, "tbody tr")[0].find_elements(By.CSS_SELECTOR, "th, td")]
    assert "Main cause" in row[0]
    stance = {h: row[i] for i, h in enumerate(headers)}
    alpha = next(h for h in headers if "sim/alpha" in h)
    beta = next(h for h in headers if "sim/beta" in h)
    assert (stance[alpha], stance[beta]) == ("the Moon", "the Sun")
    assert "The Moon's gravity drives the tides" in find(browser, "#consensus").text
    assert "Tidal locking" in find(browser, "#blind-spots").text

    # The answer: [1] links to what alpha found; [7] was retrieved by no one and is marked.
    citation = find(browser, "#answer a.citation")
    assert citation.get_attribute("href") == f"http://{stack.site_addr}/tides"
    assert find_all(browser, "#answer .unverified"), "the unverified [7] is not marked"
    assert "Tides come from the Moon's pull" in find(browser, "#answer").text
    totals = find(browser, "#totals").text
    assert "3/3" in totals and "$0.00" in totals, totals

    # Hostile markup in a member's answer and in the final answer: nothing runs, nothing loads.
    assert not find_all(browser, "#result script"), "a script element was inserted"
    assert not find_all(browser, "#result [onerror]"), "an event handler attribute survived"
    no_script_ran(browser)
    shoot(browser, "playground")

    # The permalink to this run, from History.
    browser.get(base + "/runs")
    wait(browser, lambda: find_all(browser, "#runs-table tbody tr a"), "History lists no run")
    shoot(browser, "history")
    link = find(browser, "#runs-table tbody tr a")
    run_id = link.text if link.text.startswith("gen-") else link.get_attribute("href").rsplit("/", 1)[1]
    link.click()
    wait(browser, lambda: browser.current_url.endswith(f"/runs/{run_id}"), "the permalink did not open")
    wait(browser, lambda: len(find_all(browser, "#members .member")) == 3, "the run was not rebuilt")
    assert "Tides come from the Moon's pull" in find(browser, "#answer").text
    assert "the Sun" in find(browser, "#contradictions").text
    no_script_ran(browser)
    shoot(browser, "run")

    # The same page opened directly (a shared link) rebuilds the same view.
    browser.get(f"{base}/runs/{run_id}")
    wait(browser, lambda: len(find_all(browser, "#members .member")) == 3, "the permalink did not load")


def test_a_failing_member_shows_its_reason(browser, stack):
    run_fusion(browser, f"http://{stack.addr}", ["sim/alpha", "sim/broken", "sim/gamma"])
    broken = member(browser, 1)
    assert "failed" in broken.find_element(By.CSS_SELECTOR, ".status").text
    reason = broken.find_element(By.CSS_SELECTOR, ".reason").text
    assert "500" in reason or "upstream" in reason, reason
    assert "2/3" in find(browser, "#totals").text
    no_script_ran(browser)


def test_auto_says_how_many_members_had_to_agree(browser, stack):
    # alpha and gamma both name the Moon, in too few shared words to count as agreeing.
    run_fusion(browser, f"http://{stack.addr}", ["sim/alpha", "sim/beta", "sim/gamma"], "auto")
    agreement = find(browser, "#agreement").text
    assert agreement.startswith("The panel did not agree (2 needed, threshold 0.8)"), agreement
    assert "Tides come from the Moon's pull" in find(browser, "#answer").text
    no_script_ran(browser)


def test_usage_shows_what_the_runs_cost(browser, stack):
    browser.get(f"http://{stack.addr}/usage")
    wait(browser, lambda: "quorate/fusion" in find(browser, "#usage-table").text, "no fusion row in Usage")
    rows = [r.text for r in find_all(browser, "#usage-table tbody tr")]
    fusion = next(r for r in rows if "quorate/fusion" in r)
    assert "$0.0" in fusion, fusion
    assert find(browser, "#cost-chart").size["height"] > 50
    shoot(browser, "usage")


def test_the_pages_fit_a_phone(browser, stack):
    browser.set_window_size(390, 900)
    try:
        for page in ("/", "/runs", "/usage"):
            browser.get(f"http://{stack.addr}{page}")
            wait(browser, lambda: find_all(browser, "nav a"), f"{page} did not load")
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= 390, f"{page} is {width}px wide at 390px"
        shoot(browser, "usage-phone")
    finally:
        browser.set_window_size(1280, 1000)


def test_with_keys_nothing_shows_without_a_key(browser, keyed_stack):
    browser.get(f"http://{keyed_stack.addr}/runs")
    dialog = find(browser, "#key-dialog")
    wait(browser, dialog.is_displayed, "no key was asked for")
    assert not find_all(browser, "#runs-table tbody tr a")
    find(browser, "#key-input").send_keys(KEY)
    find(browser, "#key-save").click()
    wait(browser, lambda: not dialog.is_displayed(), "the key was not taken")
    browser.get(f"http://{keyed_stack.addr}/")
    wait(browser, lambda: len(find_all(browser, "#model option, .member-model option")) > 1,
         "models did not load with the key")
