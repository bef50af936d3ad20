"""CORS in a real browser: a page from another origin on 127.0.0.1 calls the API with a
bearer token, uploads a file and reads ETag and Location; a page from an origin the
server does not list is blocked by the browser (MEDITRACK_CORS_ORIGINS, web/cors.py)."""

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

from selenium.webdriver.common.by import By

from tests.browser.chromium import chromium, screenshot, wait_for
from tests.support.api import ApiClient

PASSWORD = "correct horse battery"
# A browser app's whole job here, in the page's own script: log in (a JSON POST, so the
# browser sends a preflight first), create a patient, upload a file, and report what
# its script could read of each answer.
APP_PAGE = """<!DOCTYPE html><meta charset="utf-8"><title>app</title><pre id="result">running</pre>
<script>
(async () => {
  const params = new URLSearchParams(location.search), api = params.get("api"), seen = {};
  try {
    const login = await fetch(api + "/auth/login", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({username: params.get("user"), password: params.get("password")})});
    const auth = {"Authorization": "Bearer " + (await login.json()).accessToken};
    const created = await fetch(api + "/patients", {method: "POST", headers: {...auth, "Content-Type": "application/json"},
      body: JSON.stringify({firstName: "Ada", lastName: "Lovelace", dateOfBirth: "1815-12-10"})});
    seen.create = {status: created.status, etag: created.headers.get("ETag"), location: created.headers.get("Location"),
                   requestId: created.headers.get("X-Request-Id")};
    const form = new FormData();
    form.append("file", new Blob(["%PDF-1.4 a report from another origin"], {type: "application/pdf"}), "scan.pdf");
    const uploaded = await fetch(api + seen.create.location + "/reports", {method: "POST", headers: auth, body: form});
    seen.upload = {status: uploaded.status, location: uploaded.headers.get("Location")};
  } catch (error) {
    seen.blocked = String(error);
  }
  document.getElementById("result").textContent = JSON.stringify(seen);
})();
</script>"""


@contextmanager
def page_server(page: str = APP_PAGE):
    """A second origin: a plain server on another port of 127.0.0.1 that serves `page`."""
    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_app(driver, origin: str, api: str, username: str) -> dict:
    driver.get(f"{origin}/?api={quote(api)}&user={quote(username)}&password={quote(PASSWORD)}")
    result = driver.find_element(By.ID, "result")
    wait_for(driver, lambda: result.text != "running")
    return json.loads(result.text)


def test_a_page_from_an_allowed_origin_creates_uploads_and_reads_etag_and_location(start_server):
    with page_server() as app_origin, page_server() as other_origin:
        server = start_server(cors_origins=frozenset({app_origin}))
        username = ApiClient(server.url).register_and_login(password=PASSWORD).user["username"]
        with chromium() as driver:
            seen = run_app(driver, app_origin, server.url, username)
            screenshot(driver, "cors-allowed-origin")
            assert "blocked" not in seen, seen
            assert seen["create"]["status"] == 201 and seen["create"]["etag"] == '"1"'
            assert seen["create"]["location"].startswith("/patients/") and len(seen["create"]["requestId"]) == 32
            assert seen["upload"]["status"] == 201 and "/reports/" in seen["upload"]["location"]

            blocked = run_app(driver, other_origin, server.url, username)
            screenshot(driver, "cors-other-origin")
            assert "blocked" in blocked and "create" not in blocked, blocked  # the browser refused to let it read
