"""The book's build pipeline: execute every figure notebook with papermill, then build the Jupyter Book offline.

How the pieces connect::

    notebooks/figures.toml      registry: name -> notebook, book page, default (toy) and test parameters
    notebooks/<name>.ipynb      sources, kept without outputs in git; a cell tagged "parameters"
          |  run_notebook(): `python -m papermill` in its own process, parameters injected,
          v  log in _build/logs/<name>.log, results in results/<name>/ (reruns reuse stored results)
    _build/notebooks/<name>.ipynb   executed copies (never in git)
          |  stage_pages(): copied to the registry's page, e.g. book/figures/<name>.ipynb (git-ignored);
          v  the toy model card is staged into _build/generated/ for book/toy_world.md to include, and the
          v  student version of each course assignment to book/course/<name>.ipynb (vlmflow.assignments)
    _toc.yml + book/*.md        -> `jupyter-book build . -W -n --keep-going` (execute_notebooks: off)
          v
    _build/html                 + check_links(): no broken internal link or anchor

Entry points: ``vlmflow book build`` / ``make book`` (everything), ``vlmflow figure NAME --model M ...`` /
``make figure`` (one notebook with other parameters into its own folder), and the test suite (``test=True``: each
notebook's small parameter set merged over its defaults).

Secrets never enter an executed notebook: parameters whose name is a secret-like word (``api_key``, ``hf_token``,
``secret``...) or whose value equals a secret environment variable are refused before execution, notebooks read keys
from the environment themselves, and every executed notebook is scanned for secret values afterwards.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from vlmflow.assignments import course_pages, stage_course_pages
from vlmflow.errors import VlmflowError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

REGISTRY = Path("notebooks") / "figures.toml"
BUILD_DIR = "_build"
RESULTS_DIR = "results"
MODEL_CARD = Path("data") / "toy_model" / "MODEL_CARD.md"
GENERATED_MODEL_CARD = Path(BUILD_DIR) / "generated" / "toy_model_card.md"
# Parameters every figure notebook's "parameters" cell must define (tests/book checks it).
REQUIRED_PARAMETERS = ("model", "device", "dtype", "seed", "results_dir")
DEFAULT_TIMEOUT_S = 1200

# A parameter name made of any of these words (split at "_", "-", "." and camelCase) is refused.
SECRET_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd", "pwd", "credential",
                          "credentials", "auth", "bearer"})
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)


class BookError(VlmflowError):
    """The book pipeline failed; the message names the notebook, page or file at fault."""


class RegistryError(BookError):
    pass


class NotebookFailedError(BookError):
    pass


class SecretParameterError(BookError):
    pass


class SecretLeakError(BookError):
    pass


class BookBuildError(BookError):
    pass


# ----------------------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class FigureSpec:
    """One registered figure notebook (a table of ``notebooks/figures.toml``)."""

    name: str
    title: str
    notebook: str  # source, relative to the repository root
    page: str  # where the executed copy goes in the book (relative to the root); _toc.yml lists it
    chapter: str | None = None  # the book page whose text introduces the figure
    defaults: Mapping[str, Any] = field(default_factory=dict)  # the toy default the book is built with
    test: Mapping[str, Any] = field(default_factory=dict)  # small overrides for the test suite
    timeout: int = DEFAULT_TIMEOUT_S
    # Why the figure is not in the book yet (e.g. the toy model it needs is not shipped): it reruns with `vlmflow
    # figure` and the tests run it, but `book build` skips it and _toc.yml must not list it.
    waits_for: str | None = None

    @property
    def in_book(self) -> bool:
        return self.waits_for is None

    @property
    def toc_entry(self) -> str:
        """The page's _toc.yml ``file:`` value (path without suffix)."""
        return str(Path(self.page).with_suffix(""))

    def parameters(self, *, test: bool = False, overrides: Mapping[str, Any] | None = None,
                   results_dir: str | Path | None = None) -> dict[str, Any]:
        """Defaults, then the test overrides (``test=True``), then ``overrides``; ``results_dir`` defaults to
        ``results/<name>`` (relative to the root, the notebook's working directory)."""
        params: dict[str, Any] = dict(self.defaults)
        if test:
            params.update(self.test)
        params.update(overrides or {})
        if results_dir is not None:
            params["results_dir"] = str(results_dir)
        params.setdefault("results_dir", f"{RESULTS_DIR}/{self.name}")
        return params


def repo_root(start: str | Path | None = None) -> Path:
    """The book's root: the nearest folder at or above ``start`` (default: the working directory, then this package's
    checkout) that holds ``_config.yml`` and ``notebooks/figures.toml``."""
    candidates = [Path(start)] if start is not None else [Path.cwd(), Path(__file__).resolve().parents[2]]
    for base in candidates:
        for folder in [base.resolve(), *base.resolve().parents]:
            if (folder / "_config.yml").is_file() and (folder / REGISTRY).is_file():
                return folder
    raise BookError(
        f"no book root found from {', '.join(str(c) for c in candidates)}: expected a folder with _config.yml and "
        f"{REGISTRY} (run from the vlmflow checkout)"
    )


def _read_config(path: Path, parse, syntax_error, error, what: str, language: str):
    """``parse(path's text)``; a missing file or bad syntax raises ``error`` naming ``what`` and ``path``."""
    try:
        return parse(path.read_text())
    except FileNotFoundError:
        raise error(f"{what} {path} not found") from None
    except syntax_error as exc:
        raise error(f"{what} {path} is not valid {language}: {exc}") from None


def load_registry(root: str | Path | None = None) -> dict[str, FigureSpec]:
    """Parse ``notebooks/figures.toml`` into ``{name: FigureSpec}``, checking that each source notebook exists."""
    root = repo_root(root) if root is None else Path(root)
    path = root / REGISTRY
    data = _read_config(path, tomllib.loads, tomllib.TOMLDecodeError, RegistryError, "figure registry", "TOML")
    specs: dict[str, FigureSpec] = {}
    allowed = {f.name for f in FigureSpec.__dataclass_fields__.values()} - {"name"}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise RegistryError(f"{path}: entry {name!r} must be a table")
        unknown = set(entry) - allowed
        if unknown:
            raise RegistryError(f"{path}: figure {name!r} has unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
        missing = {"title", "notebook", "page"} - set(entry)
        if missing:
            raise RegistryError(f"{path}: figure {name!r} lacks {sorted(missing)}")
        spec = FigureSpec(name=name, **entry)
        if not (root / spec.notebook).is_file():
            raise RegistryError(f"{path}: figure {name!r} points at {spec.notebook}, which does not exist")
        for params, where in ((spec.defaults, "defaults"), (spec.test, "test")):
            check_parameters(params, where=f"{path} [{name}.{where}]")
        specs[name] = spec
    return specs


def select(specs: Mapping[str, FigureSpec], names: Iterable[str] | None) -> list[FigureSpec]:
    """The specs named (all when ``names`` is empty/None), in registry order; unknown names are an error."""
    if not names:
        return list(specs.values())
    out = []
    for n in names:
        if n not in specs:
            raise RegistryError(f"unknown figure {n!r}; registered: {', '.join(specs) or '(none)'}")
        out.append(specs[n])
    return out


# --------------------------------------------------------------------------------------------------------- parameters
def parse_param(text: str) -> tuple[str, Any]:
    """``"k=v"`` -> (k, v) with v read as JSON when it parses (numbers, true/false/null, lists, quoted strings) and
    as a plain string otherwise (``model=llava-hf/llava-1.5-7b-hf``); ``none``/``None`` -> None."""
    if "=" not in text:
        raise BookError(f"parameter {text!r} must look like NAME=VALUE")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key.isidentifier():
        raise BookError(f"parameter name {key!r} (from {text!r}) is not a Python identifier")
    if raw in ("none", "None"):
        return key, None
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def parse_params(texts: Iterable[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``--param`` options -> (parameters of every notebook, parameters of one figure): ``"k=v"`` is for every
    notebook and ``"figure.k=v"`` for that figure only (``across_architectures.others=["Qwen/Qwen2-VL-2B-Instruct"]``
    next to ``model=llava-hf/llava-1.5-7b-hf``)."""
    common: dict[str, Any] = {}
    per_figure: dict[str, dict[str, Any]] = {}
    for text in texts:
        figure, dot, _ = text.partition("=")[0].partition(".")
        if dot:
            key, value = parse_param(text[len(figure) + 1:])
            per_figure.setdefault(figure.strip(), {})[key] = value
        else:
            key, value = parse_param(text)
            common[key] = value
    return common, per_figure


def notebook_parameters(notebook: str | Path) -> list[str]:
    """The names assigned in a notebook's cell tagged "parameters": all that papermill can set. (papermill injects
    any other name without a word, so a mistyped parameter would silently run the defaults.)"""
    import ast

    data = json.loads(Path(notebook).read_text(encoding="utf-8"))
    names: list[str] = []
    for cell in data.get("cells", []):
        if cell.get("cell_type") != "code" or "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for node in ast.parse(source).body:
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, ast.AnnAssign) else [])
            names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names


def check_parameter_names(spec: "FigureSpec", params: Mapping[str, Any], root: str | Path) -> None:
    """Before anything executes: secret-like parameters (``check_parameters``), then a RegistryError naming each
    parameter that ``spec``'s notebook does not declare, the closest declared name and the full list."""
    import difflib

    check_parameters(params, where=f"figure {spec.name}")
    declared = notebook_parameters(Path(root) / spec.notebook)
    unknown = [n for n in params if n not in declared]
    if unknown:
        hints = [f"{n!r}" + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(n, declared, 1))
                             else "") for n in unknown]
        raise RegistryError(f"figure {spec.name}: unknown parameter {', '.join(hints)}; its parameters are "
                            f"{', '.join(declared)}")


def _name_words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def secret_env_values(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables that look like secrets (name contains KEY/TOKEN/SECRET/...) with a value >= 8 chars."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if _SECRET_ENV.search(k) and v and len(v) >= 8}


def check_parameters(params: Mapping[str, Any], *, where: str = "parameters",
                     env: Mapping[str, str] | None = None) -> None:
    """Refuse parameters that would write a secret into an executed notebook: a name made of a secret-like word
    (``api_key``, ``hf_token``, ``judgeSecret``; ``max_new_tokens`` is fine) or a value equal to (or containing) a
    secret environment variable's value. Notebooks read keys from the environment instead."""
    secrets = secret_env_values(env)
    for name, value in params.items():
        if SECRET_WORDS.intersection(_name_words(name)):
            raise SecretParameterError(
                f"{where}: parameter {name!r} looks like a secret; executed notebooks are published, so pass keys "
                f"through the environment (e.g. OPENAI_API_KEY) and read them inside the notebook"
            )
        text = json.dumps(value) if not isinstance(value, str) else value
        for env_name, secret in secrets.items():
            if secret in text:
                raise SecretParameterError(
                    f"{where}: parameter {name!r} carries the value of ${env_name}; pass it through the environment"
                )


def assert_no_secrets(notebook: str | Path, env: Mapping[str, str] | None = None) -> None:
    """Raise SecretLeakError (and delete the file) when an executed notebook contains a secret env value."""
    path = Path(notebook)
    text = path.read_text(errors="replace")
    for env_name, secret in secret_env_values(env).items():
        if secret in text:
            path.unlink()
            raise SecretLeakError(f"executed notebook {path} contained the value of ${env_name}; it was deleted. "
                                  f"Do not print or store keys in notebooks")


# ---------------------------------------------------------------------------------------------------------- execution
@dataclass(frozen=True)
class RunResult:
    name: str
    output: Path  # the executed notebook
    log: Path
    seconds: float
    parameters: Mapping[str, Any]


def run_notebook(source: str | Path, output: str | Path, parameters: Mapping[str, Any], *, cwd: str | Path,
                 log: str | Path, timeout: float | None = DEFAULT_TIMEOUT_S, name: str | None = None,
                 env: Mapping[str, str] | None = None) -> RunResult:
    """Execute one notebook with papermill in its own process (``python -m papermill``: a fresh interpreter and
    kernel per notebook, so figures never share state), parameters injected into the cell tagged "parameters".

    Cell outputs stream to ``log``; on failure NotebookFailedError names the notebook, the log and its last lines.
    """
    source, output, log, cwd = Path(source), Path(output), Path(log), Path(cwd)
    name = name or source.stem
    check_parameters(parameters, where=f"notebook {name}")
    output.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    params_file = log.with_suffix(".parameters.json")
    params_file.write_text(json.dumps(dict(parameters), indent=1))  # JSON is YAML: papermill's -f reads it
    cmd = [sys.executable, "-m", "papermill", str(source.resolve()), str(output.resolve()),
           "-f", str(params_file.resolve()), "--cwd", str(cwd.resolve()), "--log-output", "--no-progress-bar",
           "--kernel", "python3"]
    run_env = dict(os.environ if env is None else env)
    # Figures must reach the executed notebook as outputs: force the inline backend even if the caller set Agg.
    run_env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    run_env.setdefault("PYTHONUNBUFFERED", "1")
    # Book pages show results, not loader noise: no Hugging Face download/"Loading weights" bars, and no tqdm warning
    # that ipywidgets is missing.
    run_env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # ...nor the library's own bars (vlmflow.progress): they belong on the terminal, not in a published page.
    run_env["TQDM_DISABLE"] = "1"
    run_env["PYTHONWARNINGS"] = ",".join(filter(None, [run_env.get("PYTHONWARNINGS"), "ignore:IProgress not found"]))
    start = time.perf_counter()
    with log.open("w") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=run_env, timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    seconds = time.perf_counter() - start
    if code != 0:
        text = log.read_text(errors="replace")
        cell_error = text.rfind("Exception encountered at")  # papermill's summary of the failing cell
        tail = text[cell_error:].strip() if cell_error >= 0 else "\n".join(text.splitlines()[-25:])
        why = f"timed out after {timeout:.0f} s" if code is None else f"exited with status {code}"
        raise NotebookFailedError(f"notebook {name} ({source}) {why} after {seconds:.1f} s; log: {log}\n{tail}")
    assert_no_secrets(output, env=run_env)
    return RunResult(name=name, output=output, log=log, seconds=seconds, parameters=dict(parameters))


def run_figures(specs: Sequence[FigureSpec], *, root: str | Path, test: bool = False,
                overrides: Mapping[str, Any] | None = None, build_dir: str | Path | None = None,
                progress: bool = True,
                figure_overrides: Mapping[str, Mapping[str, Any]] | None = None, jobs: int = 1) -> list[RunResult]:
    """Execute each spec's notebook into ``_build/notebooks/<name>.ipynb`` (tqdm over notebooks), ``jobs`` at a time
    (each notebook is its own process; the figures do not read each other's results), stop at the first failure
    (NotebookFailedError names it; notebooks not yet started are not started), and write ``_build/logs/times.json``.
    ``figure_overrides[name]`` is applied after ``overrides`` to that figure only. Returns the runs in ``specs``'
    order."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    from tqdm.auto import tqdm

    if not isinstance(jobs, int) or jobs < 1:
        raise BookError(f"jobs must be a whole number >= 1, got {jobs!r}")
    root = Path(root)
    build = Path(build_dir) if build_dir is not None else root / BUILD_DIR
    bar = tqdm(total=len(specs), desc="notebooks", unit="nb", disable=not progress)

    def run(spec: FigureSpec) -> RunResult:
        own = (figure_overrides or {}).get(spec.name, {})
        params = spec.parameters(test=test, overrides={**(overrides or {}), **own})
        res = run_notebook(root / spec.notebook, build / "notebooks" / f"{spec.name}.ipynb", params, cwd=root,
                           log=build / "logs" / f"{spec.name}.log", timeout=spec.timeout, name=spec.name)
        bar.update()
        bar.write(f"  {spec.name}: {res.seconds:.1f} s  (log {res.log})")
        return res

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run, spec) for spec in specs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            for f in futures:
                f.cancel()  # those already running finish; the rest never start
            bar.close()
            raise failed.exception()
    bar.close()
    results = [f.result() for f in futures]
    times = {r.name: round(r.seconds, 2) for r in results}
    (build / "logs").mkdir(parents=True, exist_ok=True)
    (build / "logs" / "times.json").write_text(json.dumps(times, indent=1))
    return results


# ------------------------------------------------------------------------------------------------------------- pages
def stage_pages(root: str | Path, specs: Sequence[FigureSpec], *, build_dir: str | Path | None = None) -> list[Path]:
    """Copy executed notebooks to their book pages and stage the toy model card; returns the staged files.

    A figure whose executed copy is missing is an error naming it (the HTML build would otherwise silently show a
    stale page or fail on a toc entry)."""
    root = Path(root)
    build = Path(build_dir) if build_dir is not None else root / BUILD_DIR
    staged = []
    for spec in specs:
        executed = build / "notebooks" / f"{spec.name}.ipynb"
        if not executed.is_file():
            raise BookBuildError(f"figure {spec.name}: executed notebook {executed} is missing; run the notebooks "
                                 f"first (vlmflow book build)")
        page = root / spec.page
        page.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(executed, page)
        drop_widgets(page)
        staged.append(page)
    staged.append(stage_model_card(root))
    staged += stage_course_pages(root)  # the Course part: each assignment's student version (vlmflow.assignments)
    return staged


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def drop_widgets(notebook: str | Path) -> None:
    """Remove widget outputs (tqdm's notebook progress bars, drawn when ipywidgets is installed: otter-grader brings
    it) and the notebook's widget state. Progress belongs on the terminal, and a page with widgets would load
    require.js and the widget manager from a CDN, which an offline book cannot."""
    import nbformat

    path = Path(notebook)
    nb = nbformat.read(path, as_version=4)
    changed = nb.metadata.pop("widgets", None) is not None
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
        changed |= len(kept) != len(cell.outputs)
        cell.outputs = kept
    if changed:
        nbformat.write(nb, path)


def stage_model_card(root: str | Path) -> Path:
    """Write ``_build/generated/toy_model_card.md`` for book/toy_world.md to include: the shipped model card with its
    headings one level down (it sits under the chapter's title), or a note saying it is not in this checkout."""
    root = Path(root)
    out = root / GENERATED_MODEL_CARD
    out.parent.mkdir(parents=True, exist_ok=True)
    card = root / MODEL_CARD
    if not card.is_file():  # a tmp copy of the book (tests) reads the card from the package's checkout
        card = Path(__file__).resolve().parents[2] / MODEL_CARD
    if card.is_file():
        out.write_text(demote_headings(card.read_text()))
    else:
        out.write_text("## Model card\n\nThis checkout has no trained toy model yet (`data/toy_model/MODEL_CARD.md` "
                       "is missing). `make toy-model` trains it and writes the card, which then appears here.\n")
    return out


def demote_headings(markdown: str, levels: int = 1) -> str:
    """Add ``levels`` '#' to every ATX heading outside fenced code blocks."""
    out, fence = [], None
    for line in markdown.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            marker = stripped[:3]
            fence = None if fence == marker else (fence or marker)
        elif fence is None and re.match(r"#{1,6}\s", stripped):
            line = "#" * levels + stripped
        out.append(line)
    return "\n".join(out) + "\n"


# -------------------------------------------------------------------------------------------------------------- html
def build_html(root: str | Path, *, log: str | Path | None = None, strict: bool = True) -> Path:
    """``jupyter-book build`` the root (notebooks are not executed: _config.yml sets execute_notebooks "off"), with
    warnings as errors and nitpicky references when ``strict``; then check internal links. Returns _build/html."""
    root = Path(root)
    log = Path(log) if log is not None else root / BUILD_DIR / "logs" / "jupyter-book.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
           "build", str(root.resolve()), "--all"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=root, env=env)
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        problems = [ln for ln in text.splitlines() if "WARNING" in ln or "ERROR" in ln] or text.splitlines()[-20:]
        raise BookBuildError(f"jupyter-book build of {root} failed (status {proc.returncode}); log: {log}\n"
                             + "\n".join(problems[:40]))
    html = root / BUILD_DIR / "html"
    complete_redirect(html)
    broken = check_links(html)
    if broken:
        raise BookBuildError(f"{len(broken)} broken internal link(s) in {html}:\n" + "\n".join(broken[:40]))
    return html


def complete_redirect(html_dir: str | Path) -> None:
    """Jupyter Book writes the top-level index.html as a bare ``<meta http-equiv="Refresh">`` line. Make it a small
    complete page (charset, title, the book's favicon so browsers do not request a missing /favicon.ico, and a
    plain link for readers without redirects)."""
    index = Path(html_dir) / "index.html"
    text = index.read_text() if index.is_file() else ""
    match = re.fullmatch(r'\s*<meta http-equiv="Refresh" content="0; url=([^"]+)"\s*/?>\s*', text)
    if not match:
        return
    target = match.group(1)
    icons = sorted((Path(html_dir) / "_static").glob("favicon.*"))
    icon = f'<link rel="icon" href="_static/{icons[0].name}">' if icons else ""
    index.write_text(
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Refresh" content="0; url={target}">{icon}<title>vlmflow book</title></head>\n'
        f'<body><p><a href="{target}">Continue to the book</a></p></body></html>\n')


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str]] = []  # (tag.attr, url)
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        d = dict(attrs)
        for key in ("id", "name"):
            if d.get(key):
                self.ids.add(d[key])
        for attr in ("href", "src"):
            if d.get(attr) and tag in ("a", "img", "link", "script", "iframe", "source"):
                self.refs.append((f"{tag}.{attr}", d[attr]))


def check_links(html_dir: str | Path) -> list[str]:
    """Every internal link, image, stylesheet and script of every page in ``html_dir`` must point at an existing file
    (and, for ``page.html#anchor``, an element with that id). Returns ``"page: tag.attr -> url (why)"`` per broken one.
    External URLs (http, https, mailto...) are not followed: the browser test checks that pages load offline."""
    html_dir = Path(html_dir)
    if not (html_dir / "index.html").is_file():
        return [f"{html_dir}: no index.html (was the book built?)"]
    parsed: dict[Path, _Links] = {}

    def parse(path: Path) -> _Links:
        if path not in parsed:
            p = _Links()
            p.feed(path.read_text(errors="replace"))
            parsed[path] = p
        return parsed[path]

    broken = []
    for page in sorted(html_dir.rglob("*.html")):
        if "_static" in page.relative_to(html_dir).parts:
            continue
        for what, url in parse(page).refs:
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//"):
                continue
            rel = page.relative_to(html_dir)
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{rel}: {what} -> {url} (no such file)")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in parse(target).ids:
                broken.append(f"{rel}: {what} -> {url} (no anchor #{parts.fragment})")
    return broken


# ------------------------------------------------------------------------------------------------------------- build
@dataclass
class BuildReport:
    html: Path | None
    runs: list[RunResult]
    seconds: float


def build(root: str | Path | None = None, *, only: Sequence[str] | None = None, test: bool = False,
          overrides: Mapping[str, Any] | None = None, skip_notebooks: bool = False, html: bool = True,
          progress: bool = True, figure_overrides: Mapping[str, Mapping[str, Any]] | None = None,
          jobs: int = 1) -> BuildReport:
    """The whole pipeline (``vlmflow book build``): execute the notebooks (all, or ``only``), stage pages, build HTML.

    ``test=True`` uses each figure's small test parameters; ``overrides`` replace parameters of every notebook (the
    tests pass a tiny model this way) and ``figure_overrides[name]`` those of one figure after them (the models the
    architecture chapter compares, or a figure whose model must be of another kind, such as a clip model).
    ``jobs`` notebooks run at a time (``run_figures``).
    ``skip_notebooks`` reuses executed copies already in _build/notebooks (e.g. after editing prose only). Every
    registered figure must have an executed copy before the HTML build, so the toc never points at a stale or missing
    page."""
    start = time.perf_counter()
    root = repo_root(root) if root is None else Path(root)
    registered = load_registry(root)
    check_toc(root, registered)
    waiting = [f"{n} (waits for {registered[n].waits_for})" for n in only or () if n in registered
               and not registered[n].in_book]
    if waiting:
        raise RegistryError(f"not in the book yet: {', '.join(waiting)}; run it with `vlmflow figure NAME`")
    specs = {name: spec for name, spec in registered.items() if spec.in_book}
    unknown_figures = sorted(set(figure_overrides or {}) - set(specs))
    if unknown_figures:
        raise RegistryError(f"figure overrides for {', '.join(map(repr, unknown_figures))}: no such figure in the "
                            f"book; in it: {', '.join(specs)}")
    for name, params in (figure_overrides or {}).items():
        check_parameter_names(specs[name], params, root)
    if overrides and not skip_notebooks:  # an override no selected notebook declares is a typo, not a no-op
        check_parameters(overrides, where="--param")
        chosen = select(specs, only)
        declared = {n for spec in chosen for n in notebook_parameters(root / spec.notebook)}
        unknown = [n for n in overrides if n not in declared]
        if unknown:
            raise RegistryError(f"unknown parameter {', '.join(map(repr, unknown))}: no selected notebook declares "
                                f"it; their parameters are {', '.join(sorted(declared))}")
    runs = [] if skip_notebooks else run_figures(select(specs, only), root=root, test=test, overrides=overrides,
                                                 figure_overrides=figure_overrides, progress=progress, jobs=jobs)
    out = None
    if html:
        stage_pages(root, list(specs.values()))
        out = build_html(root)
    return BuildReport(html=out, runs=runs, seconds=time.perf_counter() - start)


def toc_files(root: str | Path) -> list[str]:
    """Every ``file:`` entry of _toc.yml (``root:`` included), in order."""
    import yaml

    path = Path(root) / "_toc.yml"
    data = _read_config(path, yaml.safe_load, yaml.YAMLError, BookError, "table of contents", "YAML")
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for k in ("root", "file"):
                if k in node:
                    found.append(str(node[k]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(data)
    return found


def check_toc(root: str | Path, specs: Mapping[str, FigureSpec]) -> None:
    """Registry and toc must agree: every figure's page is in _toc.yml, and every toc entry under book/figures/ is a
    registered figure (a notebook page nobody executes would render without outputs); a figure that waits for
    something (``FigureSpec.waits_for``) is not in _toc.yml."""
    entries = toc_files(root)
    listed = [f"{s.name} ({s.toc_entry}, waits for {s.waits_for})" for s in specs.values()
              if not s.in_book and s.toc_entry in entries]
    if listed:
        raise RegistryError(f"_toc.yml lists figures that are not in the book yet: {', '.join(listed)}")
    pages = {s.toc_entry: s.name for s in specs.values() if s.in_book}
    missing = [f"{name} ({page})" for page, name in pages.items() if page not in entries]
    if missing:
        raise RegistryError(f"figures registered but not in _toc.yml: {', '.join(missing)}")
    orphans = [e for e in entries if e.startswith("book/figures/") and e not in pages]
    if orphans:
        raise RegistryError(f"_toc.yml lists figure pages with no entry in {REGISTRY}: {', '.join(orphans)}")
    course = set(course_pages(root))  # staged by stage_pages from assignments/
    for e in entries:
        if e in pages or e in course:
            continue
        if not any((Path(root) / f"{e}{suffix}").is_file() for suffix in ("", ".md", ".ipynb")):
            raise RegistryError(f"_toc.yml lists {e}, which has no .md or .ipynb file under {root}")


# ------------------------------------------------------------------------------------------------------ one figure
def figure(name: str, *, model: str | None = None, device: str | None = None, dtype: str | None = None,
           params: Mapping[str, Any] | None = None, out: str | Path | None = None, root: str | Path | None = None,
           timeout: float | None = None) -> RunResult:
    """Rerun one figure with other parameters (``vlmflow figure``) into its own folder ``out`` (default
    ``results/figures/<name>/<model>``): the executed ``<name>.ipynb``, its log, and its figures and stored results
    (the notebook's ``results_dir`` is ``out``, so a second run with the same parameters reuses them)."""
    root = repo_root(root) if root is None else Path(root)
    spec = select(load_registry(root), [name])[0]
    overrides = dict(params or {})
    check_parameter_names(spec, overrides, root)
    for key, value in (("model", model), ("device", device), ("dtype", dtype)):
        if value is not None:
            overrides[key] = value
    model_slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(overrides.get("model", spec.defaults.get("model", "default"))))
    out = Path(out) if out is not None else root / RESULTS_DIR / "figures" / name / model_slug.strip("_")
    out = out.resolve()
    parameters = spec.parameters(overrides=overrides, results_dir=out)
    return run_notebook(root / spec.notebook, out / f"{name}.ipynb", parameters, cwd=root, log=out / f"{name}.log",
                        timeout=timeout if timeout is not None else spec.timeout, name=name)
