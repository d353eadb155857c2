"""The book as a reader sees it: build it from the smoke run, serve _build/html on localhost and open every
page in headless Chromium. No image may be missing, no page may show an error output, and the pages that
show tables must show them; a screenshot of the landing page stays in _build/landing.png.

Chromium is Debian's ``chromium`` package (nothing is downloaded); without a Chromium-like browser on the
PATH these tests are skipped, saying so. The checker itself is in tests/reader.py; the last two tests
show it fails on a broken page and passes a good one, without building the book.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from reader import check_page, find_browser, html_pages, redirect_target, screenshot, serve

# Pages whose tables a reader must see, with the least number of <table> elements each: the chapter's
# two glued tables (objectness beside Table 2, the claims), the executed notebook's three (the same two
# and the per-strategy metrics), and the landing page's table of stages and commands.
CHAPTERS = ("10_table1", "11_objectness", "12_proposals", "13_stages", "14_crops_per_image",
            "15_random_resized_crop", "16_budget")
# a table chapter: its table beside the paper's, and the claims checked for each of the two sources
EXPECTED_TABLES = {"book/intro.html": 1, "book/crops.html": 2, "book/generated/01_crops.html": 3,
                   **{f"book/generated/{c}.html": 3 for c in CHAPTERS},
                   "book/generated/18_claims.html": 2}  # the counts per source and measure, every claim
# Pages whose figures must be there at all (a figure that failed to paste leaves no <img>, not a broken one).
EXPECTED_IMAGES = {"book/intro.html": 1, "book/crops.html": 4, "book/generated/01_crops.html": 4,
                   **{f"book/generated/{c}.html": 1 for c in CHAPTERS}}

# A 1x1 PNG, for the checker's own tests.
PIXEL = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def browser() -> str:
    path = find_browser()
    if path is None:
        pytest.skip("no Chromium on the PATH (looked for chromium, chromium-browser, google-chrome): "
                    "install Debian's chromium package to read the book in a browser")
    return path


@pytest.fixture(scope="module")
def built_book(smoke_book, book_copy) -> Path:
    """jupyter-book build of the temporary copy, on the smoke run; returns _build/html."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    res = subprocess.run([str(jupyter_book), "build", str(book_copy), "-W", "--keep-going", "--all"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return book_copy / "_build" / "html"


@pytest.mark.slow
def test_every_page_reads_well_in_a_browser(browser, built_book, tmp_path):
    html = built_book
    landing = redirect_target(html / "index.html")
    assert landing and (html / landing).is_file(), "index.html must send the reader to the landing page"
    pages = [p for p in html_pages(html) if p != "index.html"]  # index.html only redirects
    assert set(EXPECTED_TABLES) | set(EXPECTED_IMAGES) | {landing} <= set(pages), pages

    results, problems = {}, []
    with serve(html) as base:
        for page in pages:
            found = check_page(browser, base + page, profile=tmp_path / "profile")
            results[page] = found
            if found["missing_images"]:
                problems.append(f"{page}: missing images {found['missing_images']}")
            if found["errors"]:
                problems.append(f"{page}: error outputs {found['errors']}")
            if found["tables"] < EXPECTED_TABLES.get(page, 0):
                problems.append(f"{page}: {found['tables']} table(s), expected at least {EXPECTED_TABLES[page]}")
            if found["images"] < EXPECTED_IMAGES.get(page, 0):
                problems.append(f"{page}: {found['images']} image(s), expected at least {EXPECTED_IMAGES[page]}")
        shot = screenshot(browser, base + landing, html.parent / "landing.png", profile=tmp_path / "profile")
    assert not problems, "\n".join(problems)

    # the landing page explains the pipeline with its figure
    assert results[landing]["images"] >= 1
    assert (html / "_images" / "pipeline.svg").is_file()
    # a real picture of a rendered page, not an empty or blank file
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, f"{shot}: {len(data)} bytes"


def _write_site(root: Path, body: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pixel.png").write_bytes(PIXEL)
    (root / "page.html").write_text(f"<!DOCTYPE html><html><head><title>t</title></head><body>{body}</body></html>")
    return root


def test_checker_reports_a_broken_page(browser, tmp_path):
    """The checker must be able to fail: a missing image, an error output, a glue that pasted nothing and
    a role left as text are reported; the image that loads and the table are counted."""
    site = _write_site(tmp_path / "site", """
        <img src="pixel.png" alt="ok"><img src="no_such_figure.png" alt="gone">
        <table><tr><td>1</td></tr></table>
        <div class="cell_output"><div class="output traceback"><pre>Traceback (most recent call last):
          ValueError: boom</pre></div></div>
        <p>value: <span class="pasted-text"></span>, left as text: {glue:text}`generated/x.ipynb::key`</p>""")
    with serve(site) as base:
        found = check_page(browser, base + "page.html", profile=tmp_path / "profile")
    assert found["missing_images"] == ["no_such_figure.png"]
    assert found["images"] == 2 and found["tables"] == 1
    assert any(e.startswith("error output") and "ValueError" in e for e in found["errors"]), found["errors"]
    assert any(e.startswith("glue pasted nothing") for e in found["errors"]), found["errors"]
    assert any(e.startswith("MyST role left as text") for e in found["errors"]), found["errors"]


def test_checker_passes_a_good_page(browser, tmp_path):
    """...and passes a good one: a warning on stderr is not an error, a role shown as code is not a
    leftover role."""
    site = _write_site(tmp_path / "site", """
        <img src="pixel.png" alt="ok"><table><tr><td>1</td></tr></table><table><tr><td>2</td></tr></table>
        <div class="cell_output"><div class="output stderr"><pre>UserWarning: few images</pre></div></div>
        <pre>{glue:text}`generated/01_crops.ipynb::preset:s`</pre>""")
    with serve(site) as base:
        found = check_page(browser, base + "page.html", profile=tmp_path / "profile")
    assert found == {**found, "missing_images": [], "errors": [], "images": 1, "tables": 2}
