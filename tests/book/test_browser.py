"""The built book in a real browser: headless Chromium (Debian's package; `make browser` installs it) driven by
playwright. Every page loads over HTTP from 127.0.0.1 without console errors, page errors or failed requests (so the
book also works offline: nothing is fetched from elsewhere), and every <img> decodes with a non-zero size. Pages are
readable: no progress-bar output, every figure shown at >= 0.6 of its natural width (or zoomable: a link to its
full-size image), and every claim's verdict box on its pages and in the opening page's table.
Screenshots of the front page and of a figure page go to _build/screenshots/ of the checkout."""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import threading
from dataclasses import dataclass, field
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


# tqdm's text bar: "desc:  40%|████      | 2/5 [00:01<00:02, 1.2it/s]"
PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+|\d+/\d+ \[\d\d:\d\d")
MIN_WIDTH_RATIO = 0.6
# The prose pages that show a claim's verdict box (pasted from the claim's notebook), beside the notebooks' own pages.
PROSE_BOXES = {"book/finding1_query_tokens.html": {"finding1", "fig1"}, "book/finding2_middle_layers.html": {"finding2"},
               "book/finding3_localized.html": {"finding3"}, "book/reprompting.html": {"table1"}}


@dataclass
class Visit:
    """What one page showed in the browser: ``load_problems`` (console and page errors, failed or external requests,
    HTTP errors, images that did not decode), ``n_images``, ``outputs`` (the cells' output texts), ``figures`` ([src,
    shown width, natural width, zoomable] per cell image), ``boxes`` ({claim: outcome} of its verdict boxes) and,
    on the opening page, the verdict ``table``'s rows."""
    load_problems: list[str] = field(default_factory=list)
    n_images: int = 0
    outputs: list[str] = field(default_factory=list)
    figures: list = field(default_factory=list)
    boxes: dict[str, str] = field(default_factory=dict)
    table: list | None = None


@pytest.fixture(scope="module")
def visits(server, browser) -> dict[str, Visit]:
    """Every built page visited once (the two page tests below read the same visit, so the walk over ~40 pages runs
    once): loaded over HTTP, then left until the network is idle, as a reader's browser would."""
    base, html = server
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html") if "_static" not in p.parts)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    out: dict[str, Visit] = {}
    for rel in pages:
        visit = out[rel] = Visit()
        problems = visit.load_problems
        page = context.new_page()
        page.on("console", lambda m, rel=rel, ps=problems: ps.append(f"{rel}: console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e, rel=rel, ps=problems: ps.append(f"{rel}: page error: {e}"))
        page.on("requestfailed", lambda r, rel=rel, ps=problems: ps.append(f"{rel}: request failed: {r.url} "
                                                                           f"{r.failure}"))
        page.on("response", lambda r, rel=rel, ps=problems: ps.append(f"{rel}: HTTP {r.status} for {r.url}")
                if r.status >= 400 else None)
        page.on("request", lambda r, rel=rel, ps=problems: ps.append(f"{rel}: external request {r.url}")
                if not r.url.startswith((base, "data:", "blob:", "about:")) else None)
        response = page.goto(f"{base}/{rel}", wait_until="load")
        assert response is not None and response.ok, f"{rel}: HTTP {response and response.status}"
        page.wait_for_load_state("networkidle")
        if page.url != f"{base}/{rel}":  # a redirect page (the root index.html): its own loads are cut short
            problems[:] = [p for p in problems if "net::ERR_ABORTED" not in p]
        sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.currentSrc || i.src, i.complete, "
                                                 "i.naturalWidth, i.naturalHeight])")
        problems += [f"{rel}: image {src} did not load ({width}x{height})" for src, complete, width, height in sizes
                     if not (complete and width > 0 and height > 0)]
        visit.n_images = len(sizes)
        visit.outputs = page.eval_on_selector_all(".cell_output .output", "els => els.map(e => e.innerText)")
        visit.figures = page.eval_on_selector_all(
            ".cell_output img", "imgs => imgs.map(i => [i.getAttribute('src'), i.getBoundingClientRect().width, "
                                "i.naturalWidth, !!(i.closest('a') && i.closest('a').href === i.src)])")
        visit.boxes = dict(page.eval_on_selector_all(
            ".vlmflow-verdict", "els => els.map(e => [e.dataset.claim, e.dataset.outcome])"))
        if rel == "book/index.html":
            visit.table = page.eval_on_selector_all("table.vlmflow-verdicts tbody tr",
                                                    "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")
        page.close()
    context.close()
    return out


def test_every_page_loads_cleanly_and_images_decode(server, browser, visits):
    base, _ = server
    assert "index.html" in visits and "book/figures/token_roles.html" in visits
    redirect = context_free_url(browser, f"{base}/index.html")
    assert redirect == f"{base}/book/index.html", f"the root index.html leads to {redirect}"
    problems = [p for visit in visits.values() for p in visit.load_problems]
    assert not problems, "\n".join(problems)
    assert sum(visit.n_images for visit in visits.values()) > 0


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


def test_pages_are_readable_and_every_claim_has_its_verdict(built_book, visits):
    from vlmflow.verdicts import CLAIMS, OUTCOMES

    root, _ = built_book
    pages = {rel: visit for rel, visit in visits.items() if rel.rsplit("/", 1)[-1] not in ("genindex.html",
                                                                                          "search.html")}
    problems: list[str] = []
    for rel, visit in pages.items():
        problems += [f"{rel}: progress-bar output: {text[:80]!r}" for text in visit.outputs if PROGRESS_BAR.search(text)]
        for src, shown, natural, zoomable in visit.figures:
            if natural and shown / natural < MIN_WIDTH_RATIO and not zoomable:
                problems.append(f"{rel}: figure {src} shown at {shown:.0f} of {natural} px ({shown / natural:.2f} < "
                                f"{MIN_WIDTH_RATIO}) and not zoomable")
    boxes = {rel: visit.boxes for rel, visit in pages.items()}
    table = pages["book/index.html"].table
    assert not problems, "\n".join(problems)
    for claim in CLAIMS.values():  # every claim: a box on its notebook's page, with the outcome its notebook saved
        record = json.loads(next((root / "results").rglob(f"verdict-{claim.id}.json")).read_text())
        assert boxes.get(f"book/{claim.page}.html", {}).get(claim.id) == record["outcome"], claim.id
        row = [r for r in table if r[0].startswith(claim.title)]
        assert len(row) == 1, f"opening page's table has no single row for {claim.title!r}: {table}"
        assert row[0][1:] == [claim.paper, record["measured"], record["outcome"]], claim.id
    for rel, claims in PROSE_BOXES.items():
        assert set(boxes[rel]) == claims, f"{rel} shows verdict boxes {sorted(boxes[rel])}, expected {sorted(claims)}"
        assert all(outcome in OUTCOMES for outcome in boxes[rel].values())
    assert len(table) == len(CLAIMS)
