"""/docs in headless Chromium: authorize, create a patient and upload a report through the
"Try it" panels, and no horizontal overflow on a phone or a desktop."""

import pytest
from selenium.webdriver.common.by import By

from tests.browser.chromium import chromium, screenshot, wait_for
from tests.support.api import ApiClient
from tests.support.uploads import pdf_of_size

PASSWORD = "correct horse battery"


def open_panel(driver, operation_id: str):
    section = driver.find_element(By.ID, f"op-{operation_id}")
    details = section.find_element(By.CSS_SELECTOR, "details.try")
    driver.execute_script("arguments[0].open = true; arguments[0].scrollIntoView()", details)
    return details.find_element(By.CSS_SELECTOR, "form.try")


def send(driver, form) -> str:
    """Click Send; the status the panel shows (or "failed", with its text in the assertion)."""
    output = form.find_element(By.TAG_NAME, "output")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    status = wait_for(driver, lambda: output.get_attribute("data-status"))
    assert status != "failed", output.text
    return status


def test_authorize_then_create_a_patient_and_upload_a_report_through_the_panels(live_server, tmp_path):
    client = ApiClient(live_server.url).register_and_login(password=PASSWORD)
    username = client.user["username"]
    with chromium() as driver:
        driver.get(live_server.url + "/docs")
        authorize = driver.find_element(By.ID, "authorize")
        authorize.find_element(By.NAME, "username").send_keys(username)
        authorize.find_element(By.NAME, "password").send_keys(PASSWORD)
        authorize.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        state = driver.find_element(By.ID, "auth-state")
        wait_for(driver, lambda: state.text.startswith("Authorized"))

        create = open_panel(driver, "createPatient")  # its body is the spec's example, as the page filled it in
        assert send(driver, create) == "201"
        shown = create.find_element(By.TAG_NAME, "output").text
        assert "201 Created" in shown and '"firstName": "Ada"' in shown and "etag" in shown.lower()
        location = next(line for line in shown.splitlines() if line.startswith("location: "))
        patient_id = location.removeprefix("location: /patients/")
        screenshot(driver, "docs-create-patient")

        upload = open_panel(driver, "uploadReport")
        upload.find_element(By.CSS_SELECTOR, "input[name=patientId]").clear()
        upload.find_element(By.CSS_SELECTOR, "input[name=patientId]").send_keys(patient_id)
        report = tmp_path / "panel.pdf"
        report.write_bytes(pdf_of_size(2048))
        upload.find_element(By.CSS_SELECTOR, "input[type=file][name=file]").send_keys(str(report))
        assert send(driver, upload) == "201"
        assert '"contentType": "application/pdf"' in upload.find_element(By.TAG_NAME, "output").text
    # The API agrees: the patient the page created holds the file the page sent.
    assert [r["filename"] for r in client.get(f"/patients/{patient_id}").json()["reports"]] == ["panel.pdf"]


@pytest.mark.parametrize("width, height", [(390, 844), (1280, 900)])
def test_the_page_is_never_wider_than_the_screen(live_server, width, height):
    with chromium(width, height) as driver:
        driver.get(live_server.url + "/docs")
        # Every panel open too: a form or an example must not push the page wider either.
        driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
        overflow = driver.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        screenshot(driver, f"docs-{width}px")
        assert overflow[0] <= overflow[1], f"the page is {overflow[0]} px wide in a {overflow[1]} px window"
        if width >= 1024:  # the contents stay in view beside the page on a wide screen
            nav = driver.find_element(By.TAG_NAME, "nav")
            driver.execute_script("window.scrollTo(0, 5000)")
            top, scrolled = driver.execute_script(
                "return [arguments[0].getBoundingClientRect().top, window.scrollY]", nav)
            assert scrolled > 0 and top == 0, (top, scrolled)


@pytest.mark.parametrize("width, height", [(390, 844), (1280, 900)])
def test_a_status_code_is_never_broken_across_lines(live_server, width, height):
    with chromium(width, height) as driver:
        driver.get(live_server.url + "/docs")
        # Each status cell's text on one line: as tall as one line of its own font.
        broken = driver.execute_script("""
            return [...document.querySelectorAll('td.status strong')].filter(cell => {
                const range = document.createRange();
                range.selectNodeContents(cell);
                return range.getClientRects().length !== 1;
            }).map(cell => cell.textContent);""")
        statuses = driver.execute_script("return document.querySelectorAll('td.status').length")
        assert statuses > 30 and broken == [], broken
