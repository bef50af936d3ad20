"""The curl walkthroughs, run for real against a live server: the README's short tour
(its section "## A short tour") and the whole API (docs/walkthrough.md).

Every ```sh block of a walkthrough is run in one bash session, in order; the block
after it (```json or ```text), if any, is what it must print. Ids, timestamps and
tokens differ from run to run, so both sides have those masked before comparing;
everything else must match exactly.
"""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_URL = "http://127.0.0.1:8000"
STEP_MARK = "@@walkthrough-step@@"
MASKS = [
    (re.compile(r"token=[0-9a-f]{24}\.[0-9a-f]{24}\.[0-9]+\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{43}"), "token=<link-token>"),
    (re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"), "<token>"),
    (re.compile(r"\b[0-9a-f]{24}\.[A-Za-z0-9_-]{43}"), "<refresh-token>"),
    (re.compile(r"\b[0-9a-f]{24}\b"), "<id>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"), "<time>"),
    (re.compile(r"^Date: .*$", re.MULTILINE), "Date: <date>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<request-id>"),
    (re.compile(r'"hash":"[0-9a-f]{64}"'), '"hash":"<hash>"'),
]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_tour() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("\n## A short tour\n", 1)[1].split("\n## ", 1)[0]


def whole_walkthrough() -> str:
    return (ROOT / "docs" / "walkthrough.md").read_text(encoding="utf-8")


WALKTHROUGHS = {"readme-tour": readme_tour, "docs-walkthrough": whole_walkthrough}


def walkthrough_steps(section: str) -> list[tuple[str, str]]:
    """(commands, expected output) for each sh block of a walkthrough."""
    steps = []
    for match in BLOCK.finditer(section):
        language, content = match[1], match[2]
        if language == "sh":
            steps.append([content, ""])
        elif steps and language in ("json", "text"):
            steps[-1][1] = content
    return [tuple(step) for step in steps]


def mask(text: str) -> str:
    text = text.replace("\r\n", "\n")  # curl -D prints header lines as they came: CRLF
    for pattern, placeholder in MASKS:
        text = pattern.sub(placeholder, text)
    return text.strip()


@pytest.mark.parametrize("walkthrough, least", [("readme-tour", 5), ("docs-walkthrough", 8)])
def test_the_walkthrough_has_steps_with_outputs(walkthrough, least):
    steps = walkthrough_steps(WALKTHROUGHS[walkthrough]())
    assert len(steps) >= least
    assert sum(1 for _, expected in steps if expected) >= least - 1


@pytest.mark.parametrize("walkthrough", sorted(WALKTHROUGHS))
def test_the_walkthrough_prints_what_it_shows(start_server, tmp_path, walkthrough):
    server = start_server()
    steps = walkthrough_steps(WALKTHROUGHS[walkthrough]())
    script = "set -e\n" + "".join(f"{commands}\necho {STEP_MARK}\n" for commands, _ in steps)
    script = script.replace(README_URL, server.url)
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outputs = result.stdout.split(STEP_MARK + "\n")[:-1]
    assert len(outputs) == len(steps)
    for (commands, expected), actual in zip(steps, outputs):
        actual = actual.replace(server.url, README_URL)  # FHIR's absolute URLs name the server
        assert mask(actual) == mask(expected), f"the {walkthrough} step\n{commands}\nprinted\n{actual}"
