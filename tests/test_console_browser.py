"""The web console in a real browser (docs/operations.md, 6): headless Chromium (Debian's
``chromium`` and ``chromium-driver``) driven by Selenium loads each page against a server
with data, checks the figures against the store's, clicks through the message browser, sees
markup in a record shown as text (never run), and saves a screenshot of each page in pytest's
temporary directory and, when ``ES_TEST_ARTIFACTS`` names a directory, there too.

Without the binaries the test is skipped, except in CI (``CI=true``) where it fails."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from consolekit import MARKUP, console_server

import eventstore

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 10.0
T = TypeVar("T")

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        message = f"{CHROMIUM} and {CHROMEDRIVER} are needed (Debian's chromium and chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    """A bounded wait that tries again when the page redrew an element it was reading
    (the console refreshes its views while a test reads them)."""
    return WebDriverWait(driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,))


def settled(driver: WebDriver, read: Callable[[WebDriver], T]) -> T:
    """``read(driver)``, read again if the page redrew what it was reading meanwhile."""
    return wait(driver).until(lambda d: (read(d),))[0]


def open_view(driver: WebDriver, base: str, fragment: str, view: str) -> None:
    """Load the page at ``#fragment`` and wait until ``view`` is drawn."""
    driver.get(f"{base}/console#{fragment}")
    driver.refresh()  # a new fragment on the same page only fires hashchange; start clean
    wait(driver).until(
        lambda d: d.find_element(By.ID, "view").get_attribute("data-view") == view)


def screenshot(driver: WebDriver, tmp_path: Path, name: str) -> None:
    path = tmp_path / "screenshots" / f"console-{name}.png"
    path.parent.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(path))
    artifacts = os.environ.get("ES_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / path.name)


def cell(driver: WebDriver, row: str, field: str) -> str:
    return settled(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"{row} [data-field='{field}']").text)


def test_console_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, browser: WebDriver) -> None:
    with console_server(tmp_path, monkeypatch) as (store, address):
        base = f"http://{address}"
        check_topics(browser, base, store, tmp_path)
        check_groups(browser, base, tmp_path)
        check_messages(browser, base, store, tmp_path)
        check_streams(browser, base, tmp_path)
        open_view(browser, base, "throughput", "throughput")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#throughput-charts .chart svg")) == 4
        screenshot(browser, tmp_path, "throughput")
        assert browser.execute_script("return window.pwned === undefined")


def check_topics(driver: WebDriver, base: str, store: eventstore.Store, tmp_path: Path) -> None:
    open_view(driver, base, "topics", "topics")
    stats = store.statistics()
    assert driver.find_element(By.CSS_SELECTOR, "[data-field='records']").text == f"{stats.records:,}"
    assert driver.find_element(By.CSS_SELECTOR, "[data-field='topics']").text == str(stats.topics)
    assert cell(driver, "tr[data-topic='orders']", "records") == "12"
    assert cell(driver, "tr[data-topic='orders']", "retention") == "24 h"
    screenshot(driver, tmp_path, "topics")
    driver.find_element(By.LINK_TEXT, "orders").click()
    wait(driver).until(
        expected_conditions.presence_of_element_located((By.ID, "partitions")))
    for p in (p for p in stats.partition_stats if p.topic == "orders"):
        row = f"tr[data-partition='{p.partition}']"
        assert (cell(driver, row, "log_start_offset"), cell(driver, row, "end_offset")) == (
            str(p.log_start_offset), str(p.end_offset))
    screenshot(driver, tmp_path, "topic")


def check_groups(driver: WebDriver, base: str, tmp_path: Path) -> None:
    open_view(driver, base, "groups", "groups")
    assert cell(driver, "tr[data-group='billing']", "lag") == "8"
    screenshot(driver, tmp_path, "groups")
    driver.find_element(By.LINK_TEXT, "billing").click()
    wait(driver).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#lag-charts svg polyline")) == 2)
    assert cell(driver, "tr[data-partition='orders-1']", "lag") == "5"
    chart = driver.find_element(By.CSS_SELECTOR, "[data-chart='lag-orders-1'] [data-field='lag-orders-1']")
    assert chart.text == "5"
    screenshot(driver, tmp_path, "group")


def check_messages(driver: WebDriver, base: str, store: eventstore.Store, tmp_path: Path) -> None:
    open_view(driver, base, "messages", "messages")
    Select(driver.find_element(By.NAME, "topic")).select_by_value("orders")
    partition = driver.find_element(By.NAME, "partition")
    partition.clear()
    partition.send_keys("1")
    driver.find_element(By.NAME, "offset").send_keys("2")
    Select(driver.find_element(By.NAME, "format")).select_by_value("json")
    driver.find_element(By.ID, "browse-go").click()
    wait(driver).until(expected_conditions.presence_of_element_located(
        (By.CSS_SELECTOR, "tr[data-offset='2']")))
    offsets = settled(driver, lambda d: [int(r.get_attribute("data-offset") or -1)
                                          for r in d.find_elements(By.CSS_SELECTOR, "#records tbody tr")])
    assert offsets == [r.offset for r in store.read("orders", 1, 2)] == [2, 3, 4, 5]
    assert cell(driver, "tr[data-offset='2']", "value").replace(" ", "").replace("\n", "") == '{"n":5}'
    screenshot(driver, tmp_path, "messages")
    open_view(driver, base, "messages?topic=audit&format=text", "messages")
    assert cell(driver, "tr[data-offset='0']", "key") == MARKUP
    assert cell(driver, "tr[data-offset='0']", "headers").split() == ["h:", *MARKUP.split()]
    assert driver.find_elements(By.CSS_SELECTOR, "#view img, #view script") == []
    open_view(driver, base, "messages?topic=audit&offset=1&format=hex", "messages")
    assert cell(driver, "tr[data-offset='1']", "value").startswith("00 01 02 03")
    screenshot(driver, tmp_path, "messages-hex")


def check_streams(driver: WebDriver, base: str, tmp_path: Path) -> None:
    open_view(driver, base, "streams", "streams")
    categories = settled(driver, lambda d: [
        li.text for li in d.find_elements(By.CSS_SELECTOR, "#categories li")])
    assert categories == ["order (2)", "user (1)"]
    driver.find_element(By.LINK_TEXT, "order").click()
    wait(driver).until(
        lambda d: [li.text for li in d.find_elements(By.CSS_SELECTOR, "#streams li")] == [
            "order-1", "order-2"])
    screenshot(driver, tmp_path, "streams")
    driver.find_element(By.LINK_TEXT, "order-1").click()
    wait(driver).until(expected_conditions.presence_of_element_located((By.ID, "events")))
    assert [cell(driver, f"tr[data-version='{v}']", "type") for v in (0, 1)] == ["Placed", "Paid"]
    assert cell(driver, "tr[data-version='1']", "data") == MARKUP
    screenshot(driver, tmp_path, "stream")
