"""The built site, opened page by page in a real headless browser (Debian's ``chromium``).

The site is built with ``mkdocs build --strict`` (``SNN_CORE_FAST=1``: the
tutorials run with tiny budgets), served from 127.0.0.1, and every HTML page
is loaded in Chromium, driven over the DevTools protocol. For every page:

- no console error, uncaught exception or failed resource load;
- no raw TeX left in the text (math became MathML at build time);
- every image loaded (``naturalWidth > 0``);
- every internal link points to a file of the site, and its ``#anchor`` to
  an element of that page;
- each tutorial page shows printed output and at least one figure.

Screenshots of three pages go into a folder whose path the test prints
(``$SNN_CORE_SCREENSHOTS`` if set). Skipped only when ``chromium`` (or
MkDocs, or ``websocket-client``) is not installed; ``.ci/run`` installs them
and sets ``SNN_CORE_REQUIRE_BROWSER=1``, which turns those skips into failures.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT_PAGES = ["index.html", "tutorials/04_bptt_by_hand/index.html", "bptt/index.html"]

#: CI sets SNN_CORE_REQUIRE_BROWSER=1: there a missing browser is a failure, not a skip
REQUIRED = os.environ.get("SNN_CORE_REQUIRE_BROWSER", "") not in ("", "0")

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None and not REQUIRED,
                       reason="chromium is not installed (apt-get install chromium)"),
]

#: evaluated in each page: everything the checks need, as one JSON-able object
PAGE_PROBE = r"""
(() => {
  const article = document.querySelector("article") || document.body;
  const clone = article.cloneNode(true);
  clone.querySelectorAll("pre, code, math, script, style, .highlight").forEach(e => e.remove());
  return {
    title: document.title,
    text: clone.innerText,
    full: (document.querySelector("article") || document.body).innerText,
    images: Array.from(document.images).map(i => [i.getAttribute("src"), i.complete ? i.naturalWidth : -1]),
    links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
    ids: Array.from(document.querySelectorAll("[id]")).map(e => e.id),
    outputs: document.querySelectorAll(".tutorial-output pre").length,
    maths: document.querySelectorAll("math").length,
  };
})()
"""
#: patterns of TeX that did not become MathML (text outside code)
RAW_TEX = [r"\(", r"\)", r"\[", r"\]", "$$", r"\frac", r"\partial", r"\alpha", r"\sum", "_{", "^{"]
#: Sphinx roles that would show up raw (anywhere, code included: the API's type cells are code)
RAW_REST = [":func:`", ":class:`", ":meth:`", ":mod:`", ":data:`", ":attr:`"]


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page target."""

    def __init__(self, ws_url):
        import websocket  # websocket-client

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id, self.events = 0, []

    def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method, timeout=60):
        deadline = time.monotonic() + timeout
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == method:
                return msg
            self.events.append(msg)
        raise TimeoutError(method)

    def close(self):
        self.ws.close()


def _problems(events):
    """Console errors, exceptions and failed loads among CDP events."""
    out = []
    for ev in events:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"log error: {p['entry']['text']} {p['entry'].get('url', '')}")
    return out


def _need(module):
    if REQUIRED:
        __import__(module)  # ImportError: a failure in CI
    else:
        pytest.importorskip(module)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    assert CHROMIUM is not None, "SNN_CORE_REQUIRE_BROWSER=1 but chromium is not installed"
    _need("mkdocs")
    _need("websocket")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, SNN_CORE_FAST="1", NO_MKDOCS_2_WARNING="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="snn-chromium-")
    proc = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-extensions", "--disable-background-networking", "--remote-debugging-port=0",
                             f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file, deadline = Path(profile) / "DevToolsActivePort", time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("chromium did not start (no DevToolsActivePort)")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        cdp = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            cdp.call(f"{domain}.enable")
        yield cdp
        cdp.close()
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def _load(cdp, url):
    # a blank page in between, so late events of the previous page are not blamed on this one
    cdp.call("Page.navigate", url="about:blank")
    cdp.wait_for("Page.loadEventFired")
    cdp.call("Runtime.evaluate", expression="0")
    cdp.events.clear()
    cdp.call("Page.navigate", url=url)
    cdp.wait_for("Page.loadEventFired")
    time.sleep(0.3)  # let deferred scripts (search worker, theme) report errors
    probe = cdp.call("Runtime.evaluate", expression=PAGE_PROBE, returnByValue=True)["result"]["value"]
    cdp.call("Runtime.evaluate", expression="0")  # flush pending events into cdp.events
    return probe, _problems(cdp.events)


def page_failures(cdp, url, rel):
    """Load one page; ``(failures, probe)`` for the checks that need only that page."""
    probe, problems = _load(cdp, url)
    failures = [f"{rel}: {p}" for p in problems]
    failures += [f"{rel}: raw TeX {tex!r} in the text" for tex in RAW_TEX if tex in probe["text"]]
    failures += [f"{rel}: raw reST role {r!r}" for r in RAW_REST if r in probe["full"]]
    failures += [f"{rel}: image {src} did not load" for src, width in probe["images"] if width <= 0]
    if rel.startswith("tutorials/0"):
        if probe["outputs"] == 0:
            failures.append(f"{rel}: tutorial page shows no output")
        if not any("/figures/" in (src or "") for src, _ in probe["images"]):
            failures.append(f"{rel}: tutorial page shows no figure")
    return failures, probe


def test_checks_catch_a_broken_page(browser, tmp_path):
    """The checks can fail: a page with raw TeX, a missing image and a console error is flagged three times."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><article><p>Energy \\(E = mc^2\\) and $$x_{t}$$</p>"
                    '<img src="missing.png"><script>console.error("boom")</script></article></body></html>')
    failures, _ = page_failures(browser, page.as_uri(), "bad.html")
    text = "\n".join(failures)
    assert "raw TeX" in text and "image missing.png did not load" in text and "console.error: boom" in text
    good = tmp_path / "good.html"
    good.write_text("<html><body><article><p>Energy <math><mi>E</mi></math>; see <code>\\(x\\)</code></p>"
                    "</article></body></html>")
    assert page_failures(browser, good.as_uri(), "good.html")[0] == []


def test_every_page_in_chromium(site, server, browser):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html") if p.name != "404.html")
    assert "index.html" in pages and any(p.startswith("tutorials/0") for p in pages)
    shots = Path(os.environ.get("SNN_CORE_SCREENSHOTS") or tempfile.mkdtemp(prefix="snn-site-screenshots-"))
    shots.mkdir(parents=True, exist_ok=True)
    failures, ids, links, written = [], {}, [], []
    for rel in pages:
        page_fail, probe = page_failures(browser, server + rel, rel)
        failures += page_fail
        ids[rel] = set(probe["ids"])
        links += [(rel, href) for href in probe["links"]]
        if rel in SCREENSHOT_PAGES:
            png = browser.call("Page.captureScreenshot", format="png")["data"]
            name = rel.removesuffix("index.html").strip("/").replace("/", "_") or "index"
            (shots / f"{name}.png").write_bytes(base64.b64decode(png))
            written.append(shots / f"{name}.png")
    for rel, href in links:
        if not href.startswith(server):
            continue
        parts = urllib.parse.urlsplit(href[len(server) - 1:])
        target = parts.path.lstrip("/")
        target = target + "index.html" if target.endswith("/") or not target else target
        if not (site / target).is_file():
            failures.append(f"{rel}: link {href} points to a missing file")
        elif parts.fragment and target in ids and urllib.parse.unquote(parts.fragment) not in ids[target]:
            failures.append(f"{rel}: link {href} points to a missing anchor")
    print(f"\nscreenshots of {len(SCREENSHOT_PAGES)} pages in {shots}")
    assert len(written) == len(SCREENSHOT_PAGES) and all(p.stat().st_size > 10_000 for p in written)
    assert not failures, f"{len(failures)} problem(s) in {len(pages)} pages:\n" + "\n".join(failures[:60])
