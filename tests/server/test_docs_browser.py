"""The interactive documentation at /docs, in a real headless browser.

Needs Debian's ``chromium`` and ``chromium-driver``; skipped without them
locally, a failure in CI. Waits are for page states, never for durations.
"""

import json

import pytest
import requests

from ..support.auth import PASSWORD
from ..support.processes import require_program

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30  # seconds until a state is given up on; not a measured duration


@pytest.fixture
def browser():
    require_program(CHROMIUM, "it loads /docs in a real browser")
    require_program(CHROMEDRIVER, "it drives the browser")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # The console shows what the page's Content-Security-Policy refused.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def operations(base):
    document = requests.get(base + "/api/v1/openapi.json", timeout=10).json()
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }


def wait_for(driver, condition):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(condition)


def find(driver, css):
    from selenium.webdriver.common.by import By

    return wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, css))


def execute(driver, operation_id, body=None):
    """Open an operation, try it out and execute it; returns its status cell."""
    from selenium.webdriver.common.keys import Keys

    block = f"[id$='-{operation_id}']"
    find(driver, f"{block} .opblock-summary").click()
    find(driver, f"{block} .try-out__btn").click()
    if body is not None:
        editor = find(driver, f"{block} textarea.body-param__text")
        editor.send_keys(Keys.CONTROL, "a")
        editor.send_keys(Keys.DELETE)
        editor.send_keys(json.dumps(body))
    find(driver, f"{block} button.execute").click()
    return find(driver, f"{block} .live-responses-table tbody .response-col_status")


def listed_operations(driver):
    from selenium.webdriver.common.by import By

    listed = set()
    for block in driver.find_elements(By.CSS_SELECTOR, ".opblock"):
        method = block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text
        path = block.find_element(By.CSS_SELECTOR, ".opblock-summary-path")
        listed.add((method.upper(), path.get_attribute("data-path")))
    return listed


def test_docs_page_lists_every_operation_and_calls_them(start_server, browser):
    base = start_server()
    expected = operations(base)
    browser.get(base + "/docs")
    wait_for(browser, lambda d: listed_operations(d) == expected)

    status = execute(
        browser,
        "users_register",
        {"email": "browser@example.com", "password": PASSWORD},
    )
    assert status.text == "201"
    token = requests.post(
        base + "/api/v1/users/login",
        json={"email": "browser@example.com", "password": PASSWORD},
        timeout=10,
    ).json()["access_token"]

    # Authorize with the token, then call a protected operation.
    find(browser, ".auth-wrapper button.authorize").click()
    find(browser, ".modal-ux input[type='text']").send_keys(token)
    find(browser, ".modal-ux .auth-btn-wrapper button.authorize").click()
    find(browser, ".modal-ux button.btn-done").click()
    status = execute(browser, "users_me")
    assert status.text == "200"
    body = find(browser, "[id$='-users_me'] .live-responses-table .microlight")
    assert json.loads(body.text)["email"] == "browser@example.com"

    refused = [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]
    assert refused == []
