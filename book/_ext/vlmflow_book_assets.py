"""A local Sphinx extension of the vlmflow book (loaded through _config.yml's sphinx.local_extensions).

Inline scripts that extensions add after the HTML builder started (sphinx-thebe's configuration from an
`env-before-read-docs` handler, sphinx-togglebutton's selector) reach every page twice with Sphinx 7.4 — once with
filename None, once with "" — and the second `const THEBE_JS_URL` declaration is a JavaScript error in the browser
(tests/book/test_browser.py catches it). This extension drops exact duplicate script entries from each
page's context before the page is written.

It also adds the book's small stylesheet (static/vlmflow.css: pasted numbers in the weight of the text around them).
"""
from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).with_name("static")


def _key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    # an inline script may come as filename None or "" (registered before or after builder-inited): same script
    return (getattr(script, "filename", str(script)) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def add_static(app, config) -> None:
    config.html_static_path = [*config.html_static_path, str(STATIC)]


def setup(app):
    app.connect("html-page-context", dedupe_scripts, priority=900)  # after the theme and extensions add theirs
    app.connect("config-inited", add_static)
    app.add_css_file("vlmflow.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
