"""/docs in a real browser: Authorize (both grants offered) with the password flow, then
Try it out on POST /predict with a JPEG. Debian's chromium and chromium-driver, driven by
Selenium."""

import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from devstack import images
from devstack.backends import required_or_skip
from devstack.stack import DEMO_PASSWORD, DEMO_USER
from devstack.waiting import SERVER_START_S, wait_for

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PAGE_S = 120  # a page step in a browser on a cold, busy 2-core machine


@pytest.fixture
def browser(tmp_path):
    required_or_skip(bool(CHROMIUM and CHROMEDRIVER), "chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--window-size=1400,2400",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    # chromedriver gives itself a few seconds to listen; a failed start is "not yet".
    driver = wait_for(lambda: webdriver.Chrome(service=Service(CHROMEDRIVER), options=options),
                      timeout=SERVER_START_S, what="chromium and chromedriver", interval=1)
    driver.set_page_load_timeout(PAGE_S)
    yield driver
    driver.quit()


def test_authorize_then_try_predict(gateway, browser, tmp_path):
    wait = WebDriverWait(browser, PAGE_S)
    browser.get(gateway.url + "/docs")

    def click(css, within=browser):
        element = wait.until(lambda _: within.find_element(By.CSS_SELECTOR, css))
        wait.until(ready.element_to_be_clickable(element))
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()
        return element

    # Authorize offers both grants /token serves, with our scopes; we use the password flow.
    click(".auth-wrapper .btn.authorize")
    modal = wait.until(lambda _: browser.find_element(By.CSS_SELECTOR, ".modal-ux"))
    wait.until(lambda _: "Flow: password" in modal.text
               and "Flow: clientCredentials" in modal.text and "models:admin" in modal.text)
    password_flow = browser.find_element(
        By.XPATH, "//div[contains(@class, 'auth-container')][.//input[@id='oauth_username']]")
    password_flow.find_element(By.ID, "oauth_username").send_keys(DEMO_USER)
    password_flow.find_element(By.ID, "oauth_password").send_keys(DEMO_PASSWORD)
    click(".auth-btn-wrapper .btn.modal-btn.auth.authorize", password_flow)
    wait.until(lambda _: "Logout" in password_flow.text)
    click(".modal-ux .btn-done")

    # Try it out on POST /predict with a JPEG.
    operation = click("#operations-prediction-post_predict .opblock-summary").find_element(
        By.XPATH, "..")
    click(".try-out__btn", operation)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(images.jpeg())
    wait.until(lambda _: operation.find_element(By.CSS_SELECTOR, "input[type=file]")
               ).send_keys(str(photo))
    click(".execute", operation)
    status = wait.until(lambda _: operation.find_element(
        By.CSS_SELECTOR, ".live-responses-table .response .response-col_status"))
    body = operation.find_element(By.CSS_SELECTOR, ".live-responses-table").get_attribute(
        "textContent")
    browser.save_screenshot(str(tmp_path / "docs-predict.png"))
    print(f"screenshot: {tmp_path / 'docs-predict.png'}")
    assert status.text.strip() == "200", body
    assert '"class_id"' in body and f'"username": "{DEMO_USER}"' in body, body
    assert (tmp_path / "docs-predict.png").stat().st_size > 10_000
