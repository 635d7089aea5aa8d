"""The status page (`/` on MONITORING_PORT) and the local receiver's call table,
in Debian's headless Chromium driven by selenium, against the real agent process
shipping to the receiver (which refuses one call with HTTP 400: degraded, then
down once the agent stops). Screenshots are kept under .artifacts/web/."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from sipstack_agent.admin.summary import assess
from sipstack_agent.health import HealthServer
from sipstack_agent.metrics import Metrics
from sipstack_agent.receiver import Receiver

from .helpers import (
    API_KEY,
    all_complete,
    dead_letters,
    free_port,
    start_agent,
    wait_until,
    write_calls,
)
from .test_e2e import past_calls

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / ".artifacts" / "web"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    # Installs chromium + chromium-driver when missing; fails (never skips) when it cannot.
    subprocess.run([str(ROOT / "tools" / "ensure-chromium.sh")], check=True)
    opts = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument("--window-size=1400,1000")
    opts.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def text(d: WebDriver, element_id: str) -> str:
    return str(d.find_element(By.ID, element_id).text)


def refreshed_after(d: WebDriver, n: int) -> bool:
    return int(d.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed") or 0) > n


def table(d: WebDriver, element_id: str) -> list[list[str]]:
    """The rows of a table as the page shows them (read in one go: the page re-renders)."""
    rows: list[list[str]] = d.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(tr => [...tr.cells].map(td => td.innerText))",
        f"#{element_id} tbody tr",
    )
    return rows


def click_first_call(d: WebDriver) -> bool:
    d.find_elements(By.CSS_SELECTOR, "#calls tbody tr")[0].click()
    return True


def status_page_degraded(d: WebDriver, url: str, dead: str) -> dict[str, Any]:
    d.get(url)
    WebDriverWait(d, 30).until(lambda d: text(d, "state") == "DEGRADED")
    WebDriverWait(d, 30).until(lambda d: text(d, "dead") == dead)
    d.save_screenshot(str(ARTIFACTS / "status-page-degraded.png"))
    return {
        "problems": text(d, "problem-list"),
        "stages": table(d, "stages"),
        "sources": table(d, "sources"),
        "positions": table(d, "positions"),
        "by_age": table(d, "by-age"),
        "reasons": table(d, "dead-reasons"),
        "hint": d.find_element(By.ID, "dead-hint").is_displayed(),
        "shipped": text(d, "last-shipped"),
        "who": text(d, "who"),
    }


def status_page_down(d: WebDriver) -> str:
    n = int(d.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed") or 0)
    WebDriverWait(d, 30).until(lambda d: refreshed_after(d, n) and text(d, "state") == "DOWN")
    d.save_screenshot(str(ARTIFACTS / "status-page-down.png"))
    assert "stale" in (d.find_element(By.TAG_NAME, "main").get_attribute("class") or "")
    return text(d, "problem-list")


def receiver_page(d: WebDriver, url: str, n_calls: int) -> dict[str, Any]:
    d.get(url)
    WebDriverWait(d, 30).until(lambda d: len(table(d, "calls")) >= n_calls)
    rows = table(d, "calls")
    d.save_screenshot(str(ARTIFACTS / "receiver-calls.png"))
    WebDriverWait(d, 10, ignored_exceptions=[StaleElementReferenceException]).until(
        click_first_call
    )
    WebDriverWait(d, 10).until(lambda d: text(d, "doc") != "")
    doc = json.loads(text(d, "doc"))
    href = d.find_element(By.ID, "doc-all").get_attribute("href")
    d.save_screenshot(str(ARTIFACTS / "receiver-document.png"))
    d.get(href)
    raw = d.find_element(By.TAG_NAME, "body").text
    return {"rows": rows, "doc": doc, "href": href, "all_revisions": json.loads(raw)}


async def test_status_page_and_receiver_table_in_chromium(
    browser: WebDriver, make_pbx_db: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    receiver = Receiver(tmp_path / "receiver.db", api_key=API_KEY)
    await receiver.start("127.0.0.1", 0)
    pbx = await make_pbx_db("sqlite")
    calls = past_calls(10, seed=23)
    bad = calls[3].expected.linkedid
    receiver.set_faults(fail_status=400, fail_linkedid=bad, fail_path="calls")
    await write_calls(pbx.writer, calls)
    port = free_port()
    state = tmp_path / "state"
    agent = start_agent(
        pbx.settings, receiver.calls_url, state,
        MONITORING_PORT=str(port), MONITORING_HOST="127.0.0.1",
    )  # fmt: skip
    good = [c for c in calls if c.expected.linkedid != bad]
    try:
        assert await wait_until(all_complete(receiver, good, state_dir=state), 90), agent.log_tail()
        n_dead = len(dead_letters(state))  # the outbox is empty: every refusal is in
        assert n_dead >= 1, (n_dead, agent.log_tail())
        page = await asyncio.to_thread(
            status_page_degraded, browser, f"http://127.0.0.1:{port}/", str(n_dead)
        )
        assert f"{n_dead} dead letter(s) the API refused" in page["problems"]
        assert {r[0] for r in page["stages"]} >= {"source:cdr", "evaluator", "shipper"}
        assert all(r[1] == "running" for r in page["stages"]), page["stages"]
        assert {r[0]: r[1] for r in page["sources"]} == {"sql:cdr": "yes", "sql:cel": "yes"}
        assert any(r[0].startswith("sql:cdr:") and '"id"' in r[1] for r in page["positions"])
        assert [r[0] for r in page["by_age"]] == [
            "< 1 min",
            "1 min - 1 h",
            "1 h - 1 day",
            "> 1 day",
        ]
        assert page["reasons"] == [["http_400", str(n_dead)]] and page["hint"] is True
        assert "ago)" in page["shipped"] and "connector e2e" in page["who"]

        got = await asyncio.to_thread(receiver_page, browser, receiver.url + "/", len(good))
        docs = receiver.latest_complete_all()
        by_id = {r[1]: r for r in got["rows"]}
        assert set(by_id) == set(docs) == {c.expected.linkedid for c in good}
        names = {"i": "inbound", "o": "outbound", "x": "internal"}
        for lid, d in docs.items():
            row = by_id[lid]
            assert row[2] == names[d["direction"]] and row[3] == d["disposition"]
            assert row[5] == str(len(d.get("transfers", [])))
            assert (row[6] != "-") == ("queue" in d)
            assert row[7] == (
                "no" if not d.get("recording_files") else f"yes ({len(d['recording_files'])})"
            )
        assert got["doc"] == docs[got["doc"]["linkedid"]]
        assert got["href"].endswith("/_calls?linkedid=" + got["doc"]["linkedid"])
        assert got["all_revisions"]["documents"] == receiver.docs_for(got["doc"]["linkedid"])
        await asyncio.to_thread(browser.get, f"http://127.0.0.1:{port}/")
    finally:
        assert await asyncio.to_thread(agent.terminate, 15) == 0
    try:
        problems = await asyncio.to_thread(status_page_down, browser)
        assert "the agent does not answer" in problems
    finally:
        await receiver.stop()
    for shot in ("status-page-degraded", "status-page-down", "receiver-calls", "receiver-document"):
        assert (ARTIFACTS / f"{shot}.png").stat().st_size > 10_000


def timezone_shown(d: WebDriver, url: str) -> tuple[str, str, str]:
    d.get(url)
    WebDriverWait(d, 20).until(lambda d: text(d, "timezone") not in ("", "-"))
    return text(d, "timezone"), text(d, "timezone-how"), text(d, "state")


@pytest.mark.parametrize(
    ("field", "zone", "how"),
    [
        ({"timezone": {"zone": "America/Toronto", "source": "detected from the PBX"}},
         "America/Toronto", "(detected from the PBX)"),
        ({"db_timezone": "Europe/Paris"}, "Europe/Paris", ""),
        ({}, "not reported by this agent", "(DB_TIMEZONE, see sipstack-agent check)"),
    ],
)  # fmt: skip
async def test_status_page_shows_the_time_zone_in_whatever_field_reports_it(
    browser: WebDriver, field: dict[str, Any], zone: str, how: str
) -> None:
    """The page served by the real HealthServer; /status as the agent's, plus the field."""

    async def status() -> dict[str, Any]:
        doc: dict[str, Any] = {"connector_id": "tz", "stages": {}, "ready_problems": [], **field}
        return {**doc, "health": assess(doc).as_json()}

    server = HealthServer(Metrics(), status_provider=status)
    url = await server.start("127.0.0.1", 0)
    try:
        got = await asyncio.to_thread(timezone_shown, browser, url + "/")
    finally:
        await server.stop()
    assert got == (zone, how, "HEALTHY")
