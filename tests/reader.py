"""Read the built book as a reader does: serve a folder over HTTP on localhost and open pages in headless
Chromium (Debian's ``chromium``; nothing is downloaded).

The HTTP handler injects a small script before ``</body>`` of every HTML response. On the window's
``load`` event (all images loaded or failed) it collects what a reader would notice and writes it as JSON
into ``<pre id="reader-check">``, which ``chromium --dump-dom`` prints with the rest of the page:

- ``missing_images``: ``<img>`` elements that did not load (``!img.complete || img.naturalWidth === 0``);
- ``tables``: the number of ``<table>`` elements;
- ``errors``: error outputs of executed notebooks (myst-nb's ``.output.traceback``, an ``.output.stderr``
  holding a traceback or an error), "Traceback (most recent call last)" anywhere in the page, docutils
  system messages and problematic markers (what Sphinx leaves for an unknown role or directive),
  unresolved cross-references, glue that pasted nothing, and MyST roles left as plain text.
"""

from __future__ import annotations

import functools
import io
import html
import json
import re
import shutil
import subprocess
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
HEADLESS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--disable-extensions", "--disable-background-networking"]

CHECK_SCRIPT = r"""
<script>
(function () {
  function check() {
    var missing = [];
    Array.prototype.forEach.call(document.images, function (img) {
      if (!img.complete || img.naturalWidth === 0) missing.push(img.getAttribute("src"));
    });
    var errors = [];
    function add(kind, el) { errors.push(kind + ": " + (el ? (el.textContent || "").trim().slice(0, 300) : "")); }
    document.querySelectorAll(".output.traceback, div.cell_output .traceback, .output.error").forEach(
      function (el) { add("error output", el); });
    document.querySelectorAll(".output.stderr").forEach(function (el) {
      if (/Traceback|\w*Error\b/.test(el.textContent || "")) add("stderr with an error", el);
    });
    document.querySelectorAll(".system-message, .problematic").forEach(function (el) { add("sphinx problem", el); });
    document.querySelectorAll("span.xref, code.xref").forEach(function (el) {
      if (!el.closest("a")) add("unresolved reference", el);
    });
    document.querySelectorAll(".pasted-text, .pasted-inline").forEach(function (el) {
      if (!(el.textContent || "").trim()) add("glue pasted nothing", el);
    });
    if (document.body) {
      var page = document.body.cloneNode(true);  // the page's text, without scripts (this one included)
      page.querySelectorAll("script, style, noscript").forEach(function (el) { el.remove(); });
      if ((page.textContent || "").indexOf("Traceback (most recent call last)") >= 0)
        add("text", {textContent: "Traceback (most recent call last)"});
      page.querySelectorAll("pre, code").forEach(function (el) { el.remove(); });  // the prose alone
      var role = /\{(glue|glue:\w+|doc|ref|numref|eval)\}`/.exec(page.textContent || "");
      if (role) add("MyST role left as text", {textContent: role[0]});
    }
    var out = document.createElement("pre");
    out.id = "reader-check";
    out.style.display = "none";
    out.textContent = JSON.stringify({page: location.pathname, title: document.title, images: document.images.length,
                                      missing_images: missing, tables: document.querySelectorAll("table").length,
                                      errors: errors});
    document.body.appendChild(out);
  }
  if (document.readyState === "complete") check(); else window.addEventListener("load", check);
})();
</script>
"""


def find_browser() -> str | None:
    """The first Chromium-like browser on the PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class _InjectingHandler(SimpleHTTPRequestHandler):
    """Static files from ``directory``; HTML responses get CHECK_SCRIPT before ``</body>``."""

    def log_message(self, format, *args):  # quiet
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if path.suffix != ".html" or not path.is_file():
            return super().send_head()
        text = path.read_text(encoding="utf-8", errors="replace")
        index = text.lower().rfind("</body>")
        text = text[:index] + CHECK_SCRIPT + text[index:] if index >= 0 else text + CHECK_SCRIPT
        body = text.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        return io.BytesIO(body)


@contextmanager
def serve(directory: Path):
    """Serve ``directory`` on a free localhost port in a thread; yields the base URL (ending in /)."""
    handler = functools.partial(_InjectingHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _run(browser: str, args: list[str], profile: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *HEADLESS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=timeout)


def check_page(browser: str, url: str, profile: Path, timeout: float = 60) -> dict:
    """Open ``url`` (served by ``serve``) and return what the injected script found."""
    res = _run(browser, ["--dump-dom", "--virtual-time-budget=8000", url], profile, timeout)
    match = re.search(r'<pre id="reader-check"[^>]*>(.*?)</pre>', res.stdout, re.S)
    if not match:
        raise AssertionError(f"{url}: the reader check did not run (exit {res.returncode}); "
                             f"page starts {res.stdout[:300]!r}; stderr ends {res.stderr[-1500:]!r}")
    return json.loads(html.unescape(match.group(1)))


def screenshot(browser: str, url: str, path: Path, profile: Path, size: str = "1280,1000",
               timeout: float = 60) -> Path:
    """A PNG of ``url`` at ``size`` (width,height)."""
    res = _run(browser, [f"--screenshot={path}", f"--window-size={size}", url], profile, timeout)
    if not path.is_file():
        raise AssertionError(f"no screenshot of {url} (exit {res.returncode}): {res.stderr[-1500:]}")
    return path


def redirect_target(index: Path) -> str | None:
    """Where a ``<meta http-equiv="Refresh" content="0; url=...">`` page sends the reader, if it does."""
    match = re.search(r'http-equiv="refresh"[^>]*url=([^"\'>\s]+)', index.read_text(encoding="utf-8"), re.I)
    return match.group(1) if match else None


def html_pages(root: Path) -> list[str]:
    """Every .html file under ``root`` as a path relative to it, leaving out folders whose name starts
    with '.' or '_' (_static, _sources, _images: theme assets, not pages)."""
    pages = []
    for path in sorted(root.rglob("*.html")):
        rel = path.relative_to(root)
        if not any(part.startswith((".", "_")) for part in rel.parts[:-1]):
            pages.append(rel.as_posix())
    return pages
