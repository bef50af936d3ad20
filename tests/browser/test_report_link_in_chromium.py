"""A report's download link in a real browser: a page of an allowed origin shows the
uploaded PNG with a plain `<img src>` (no script, no token: what the link is for), and
a tampered link does not load (handlers/report_links.py)."""

import json
from urllib.parse import quote

from selenium.webdriver.common.by import By

from tests.browser.chromium import chromium, screenshot, wait_for
from tests.browser.test_cors_in_chromium import page_server
from tests.support.api import ApiClient
from tests.support.records import PATIENT
from tests.support.uploads import MULTIPART, PNG, file_part, multipart

# The page puts the link in an <img> and reports whether the browser could show it.
IMAGE_PAGE = """<!DOCTYPE html><meta charset="utf-8"><title>report</title><pre id="result">loading</pre>
<script>
const image = new Image();
image.onload = () => { document.getElementById("result").textContent =
  JSON.stringify({loaded: true, width: image.naturalWidth, height: image.naturalHeight}); };
image.onerror = () => { document.getElementById("result").textContent = JSON.stringify({loaded: false}); };
image.src = new URLSearchParams(location.search).get("src");
document.body.appendChild(image);
</script>"""


def shown(driver, origin: str, src: str) -> dict:
    driver.get(f"{origin}/?src={quote(src, safe='')}")
    result = driver.find_element(By.ID, "result")
    wait_for(driver, lambda: result.text != "loading")
    return json.loads(result.text)


def test_a_page_shows_an_uploaded_png_by_its_download_link(start_server):
    with page_server(IMAGE_PAGE) as app_origin:
        server = start_server(cors_origins=frozenset({app_origin}))
        client = ApiClient(server.url).register_and_login()
        patient = client.post("/patients", json=PATIENT).json()
        report = client.post(f"/patients/{patient['id']}/reports", data=multipart(file_part(PNG, "x-ray.png", "image/png")),
                             headers={"Content-Type": MULTIPART}).json()
        link = client.post(f"/patients/{patient['id']}/reports/{report['id']}/link").json()["url"]
        with chromium() as driver:
            seen = shown(driver, app_origin, link)
            screenshot(driver, "report-link-img")
            assert seen == {"loaded": True, "width": 1, "height": 1}
            assert shown(driver, app_origin, link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")) == {
                "loaded": False}
