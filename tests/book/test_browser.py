"""The built book in a real browser: headless Chromium (Debian's package; `make browser` installs it) driven by
playwright. Every page loads over HTTP from 127.0.0.1 without console errors, page errors or failed requests (so the
book also works offline: nothing is fetched from elsewhere), and every <img> decodes with a non-zero size.
Screenshots of the front page and of a figure page go to _build/screenshots/ of the checkout."""
from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

from .conftest import SCREENSHOTS

CHROMIUM = Path(os.environ.get("VLMFLOW_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.book


def _chromium_or_skip():
    if CHROMIUM.is_file():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI: `make test` installs it through `make browser`")
    pytest.skip(f"{CHROMIUM} not installed: run `make browser` (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(built_book):
    root, report = built_book
    handler = functools.partial(_QuietHandler, directory=str(report.html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", report.html
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


def context_free_url(browser, url: str) -> str:
    page = browser.new_page()
    page.goto(url, wait_until="networkidle")
    final = page.url
    page.close()
    return final


def test_every_page_loads_cleanly_and_images_decode(server, browser, built_book):
    base, html = server
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html") if "_static" not in p.parts)
    assert "index.html" in pages and "book/figures/token_roles.html" in pages
    redirect = context_free_url(browser, f"{base}/index.html")
    assert redirect == f"{base}/book/index.html", f"the root index.html leads to {redirect}"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    n_images = 0
    for rel in pages:
        page = context.new_page()
        page.on("console", lambda m, rel=rel: problems.append(f"{rel}: console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e, rel=rel: problems.append(f"{rel}: page error: {e}"))
        page.on("requestfailed", lambda r, rel=rel: problems.append(f"{rel}: request failed: {r.url} {r.failure}"))
        page.on("response", lambda r, rel=rel: problems.append(f"{rel}: HTTP {r.status} for {r.url}")
                if r.status >= 400 else None)
        page.on("request", lambda r, rel=rel: problems.append(f"{rel}: external request {r.url}")
                if not r.url.startswith((base, "data:", "blob:", "about:")) else None)
        before = len(problems)
        response = page.goto(f"{base}/{rel}", wait_until="load")
        assert response is not None and response.ok, f"{rel}: HTTP {response and response.status}"
        page.wait_for_load_state("networkidle")
        if page.url != f"{base}/{rel}":  # a redirect page (the root index.html): its own loads are cut short
            problems[before:] = [p for p in problems[before:] if "net::ERR_ABORTED" not in p]
        sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.currentSrc || i.src, i.complete, "
                                                 "i.naturalWidth, i.naturalHeight])")
        for src, complete, width, height in sizes:
            if not (complete and width > 0 and height > 0):
                problems.append(f"{rel}: image {src} did not load ({width}x{height})")
        n_images += len(sizes)
        page.close()
    context.close()
    assert not problems, "\n".join(problems)
    assert n_images > 0


def test_screenshots_of_front_page_and_a_figure_page(server, browser):
    base, _ = server
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    shots = {"front_page.png": "index.html", "figure_token_roles.png": "book/figures/token_roles.html"}
    for name, rel in shots.items():
        page.goto(f"{base}/{rel}", wait_until="networkidle")
        if "figures" in rel:  # centre the page's largest figure
            page.evaluate("() => { const imgs = [...document.querySelectorAll('article img')];"
                          " imgs.sort((a, b) => b.naturalWidth * b.naturalHeight - a.naturalWidth * a.naturalHeight);"
                          " imgs[0].scrollIntoView({block: 'center'}); }")
        page.screenshot(path=str(SCREENSHOTS / name), full_page=False)
        assert (SCREENSHOTS / name).stat().st_size > 20_000, f"{name} looks blank"
    page.close()
