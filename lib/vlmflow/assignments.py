"""Course assignments: solution notebooks in ``assignments/`` -> student and autograder versions -> grades.

How the pieces connect::

    assignments/<name>.ipynb     solution notebooks in otter-grader's "Otter Assign" format: a raw ASSIGNMENT CONFIG
          |                      cell, questions between BEGIN/END QUESTION, solutions marked BEGIN/END SOLUTION (or
          |                      "# SOLUTION"), public and hidden exception-based tests between BEGIN/END TESTS
          |  build(): `otter assign --no-run-tests` per notebook, in its own process
          v
    OUT/<name>/student/<name>.ipynb         what students get (solutions replaced by ..., public tests only)
    OUT/<name>/autograder/<name>.ipynb      the solution with its grader.check cells
    OUT/<name>/autograder/<name>-autograder_*.zip   every test, public and hidden (what grading runs)
    OUT/manifest.json                       name -> those paths and the points of every question
          |  grade(): `otter run` per submission, each in its own process session, killed at the time limit;
          v  the submission's notebook metadata (or its file name) names the assignment
    Grade(submission, assignment, score, max, questions=[QuestionGrade...], error)

``vlmflow assignments build`` / ``grade`` are the command line (``vlmflow.cli.assignments``); the book stages the
student versions as the pages of its "Course" part (``stage_course_pages``, called by ``vlmflow.book``).

Grading never raises for a bad submission: a notebook that raises keeps running (otter executes with errors
allowed, so each test that needs a missing value fails on its own), one that never ends is stopped at ``timeout``
with every question failed for that reason, and a file that is not a notebook of a known assignment gets a Grade with
``error`` set. One submission's failure never touches another's grade.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vlmflow.errors import VlmflowError

SOURCE_DIR = "assignments"
COURSE_PAGES = Path("book") / "course"  # where the book stages the student versions (git-ignored)
DEFAULT_OUT = Path("_build") / "assignments"
DEFAULT_TIMEOUT_S = 600.0  # per submission; every assignment runs in well under 3 minutes on 2 CPU cores
MANIFEST = "manifest.json"


class AssignmentError(VlmflowError):
    """Building or grading failed; the message names the assignment, notebook or folder at fault."""


# ------------------------------------------------------------------------------------------------------ sources
def source_dir(root: str | Path | None = None) -> Path:
    """``assignments/`` of ``root`` (default: the working directory's checkout, else this package's checkout)."""
    candidates = [Path(root)] if root is not None else [Path.cwd(), Path(__file__).resolve().parents[2]]
    for base in candidates:
        if (base / SOURCE_DIR).is_dir():
            return base / SOURCE_DIR
    # a tmp copy of the book (tests) has no assignments/: use the package's checkout, as the model card does
    fallback = Path(__file__).resolve().parents[2] / SOURCE_DIR
    if fallback.is_dir():
        return fallback
    raise AssignmentError(f"no {SOURCE_DIR}/ folder under {', '.join(str(c) for c in candidates)}")


def assignment_name(notebook: str | Path) -> str:
    """The ``name:`` of a solution notebook's raw ``# ASSIGNMENT CONFIG`` cell."""
    import nbformat

    path = Path(notebook)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "raw" and cell.source.lstrip().startswith("# ASSIGNMENT CONFIG"):
            m = re.search(r"^name:\s*(\S+)\s*$", cell.source, flags=re.M)
            if m:
                return m.group(1)
            raise AssignmentError(f"{path}: its ASSIGNMENT CONFIG cell has no 'name:'")
    raise AssignmentError(f"{path} is not an assignment: no raw '# ASSIGNMENT CONFIG' cell")


def sources(root: str | Path | None = None, names: Sequence[str] | None = None) -> dict[str, Path]:
    """``{name: solution notebook}`` in file order; the file stem must equal the config's name."""
    found: dict[str, Path] = {}
    for path in sorted(source_dir(root).glob("*.ipynb")):
        name = assignment_name(path)
        if name != path.stem:
            raise AssignmentError(f"{path}: the assignment is named {name!r}; name the file {name}.ipynb")
        found[name] = path
    if names:
        unknown = [n for n in names if n not in found]
        if unknown:
            raise AssignmentError(f"unknown assignment {unknown[0]!r}; known: {', '.join(found) or '(none)'}")
        found = {n: found[n] for n in names}
    return found


# ------------------------------------------------------------------------------------------------------- build
@dataclass(frozen=True)
class Built:
    """One built assignment: paths (absolute) and the points of each question, in notebook order."""

    name: str
    student: Path
    solution: Path  # the autograder version of the notebook: the solution with grader.check cells
    autograder: Path  # the zip with every test
    points: dict[str, float]

    @property
    def max(self) -> float:
        return float(sum(self.points.values()))


def question_points(autograder_zip: str | Path) -> dict[str, float]:
    """``{question: points}`` from the tests in an autograder zip (otter's own test-file reader)."""
    from otter.test_files.exception_test import ExceptionTestFile

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(autograder_zip) as zf:
            members = [m for m in zf.namelist() if m.startswith("tests/") and m.endswith(".py")]
            zf.extractall(tmp, members)
        for member in sorted(members):
            test = ExceptionTestFile.from_file(str(Path(tmp) / member))  # the format assignments use
            out[test.name] = float(test.possible)
    return out


def build(out: str | Path = DEFAULT_OUT, *, root: str | Path | None = None,
          names: Sequence[str] | None = None) -> dict[str, Built]:
    """Run ``otter assign`` on each solution notebook into ``out/<name>/`` (replaced) and write ``out/manifest.json``
    (merged with the entries of assignments not rebuilt). Tests are not run here: ``make test`` grades the solutions."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    built = {}
    for name, src in sources(root, names).items():
        dest = out / name
        if dest.exists():
            shutil.rmtree(dest)
        cmd = [sys.executable, "-m", "otter", "assign", "--no-run-tests", "--no-pdfs", str(src), str(dest)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=src.parent)
        zips = sorted((dest / "autograder").glob(f"{name}-autograder_*.zip"))
        if proc.returncode != 0 or not zips:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise AssignmentError(f"otter assign failed on {src} (status {proc.returncode}):\n{tail}")
        autograder = dest / "autograder" / f"{name}-autograder.zip"  # one stable name instead of a timestamp
        zips[-1].rename(autograder)
        built[name] = Built(name, dest / "student" / f"{name}.ipynb", dest / "autograder" / f"{name}.ipynb",
                            autograder, question_points(autograder))
    manifest = load_manifest(out) if (out / MANIFEST).is_file() else {}
    manifest.update(built)
    (out / MANIFEST).write_text(json.dumps(
        {n: {"student": str(b.student), "solution": str(b.solution), "autograder": str(b.autograder),
             "points": b.points} for n, b in manifest.items()}, indent=1))
    return built


def load_manifest(out: str | Path = DEFAULT_OUT) -> dict[str, Built]:
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise AssignmentError(f"no built assignments in {Path(out)} (missing {MANIFEST}): run `vlmflow assignments "
                              f"build --out {out}` first")
    data = json.loads(path.read_text())
    return {n: Built(n, Path(d["student"]), Path(d["solution"]), Path(d["autograder"]), d["points"])
            for n, d in data.items()}


# ------------------------------------------------------------------------------------------------------- grade
@dataclass
class QuestionGrade:
    name: str
    score: float
    max: float
    message: str  # otter's report for the question (which test failed and why), or why nothing ran


@dataclass
class Grade:
    submission: str
    assignment: str | None
    score: float
    max: float
    questions: list[QuestionGrade] = field(default_factory=list)
    error: str | None = None  # why the submission could not be graded normally (time limit, not a notebook...)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"assignment": d.pop("assignment"), "score": d.pop("score"), "max": d.pop("max"), **d}


def identify(path: Path, known: Iterable[str]) -> str:
    """The assignment a submitted notebook belongs to: otter's ``assignment_name`` in its metadata, else a known
    name that its file name starts with (a renamed copy such as ``a2_knockout_mask-jane.ipynb``)."""
    known = list(known)
    try:
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise AssignmentError(f"{path} is not a readable notebook ({type(exc).__name__}: {exc})") from None
    name = (meta.get("otter") or {}).get("assignment_name") if isinstance(meta, dict) else None
    if name in known:
        return name
    for n in sorted(known, key=len, reverse=True):
        if path.stem.startswith(n):
            return n
    raise AssignmentError(f"{path}: cannot tell which assignment it is (metadata names {name!r}; known: "
                          f"{', '.join(known)})")


def _failed(built: Built, submission: str, reason: str, seconds: float) -> Grade:
    qs = [QuestionGrade(q, 0.0, p, f"not graded: {reason}") for q, p in built.points.items()]
    return Grade(submission, built.name, 0.0, built.max, qs, reason, seconds)


def _kill_tree(pid: int) -> None:
    """Kill a grading process and every process under it (the notebook's kernel runs in a session of its own)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def grade_one(path: str | Path, built: dict[str, Built], *, timeout: float = DEFAULT_TIMEOUT_S,
              threads: int | None = None) -> Grade:
    """Grade one submission with ``otter run`` in its own process; never raises for a bad submission."""
    start = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        return Grade(str(path), None, 0.0, 0.0, error=f"{path}: no such file")
    try:
        name = identify(path, built)
    except AssignmentError as exc:
        return Grade(str(path), None, 0.0, 0.0, error=str(exc))
    b = built[name]
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory(prefix="vlmflow-grade-") as tmp:
        # otter grades every notebook in the submission folder: give it a copy under a name of its own
        submission = Path(tmp) / "submission" / f"{name}.ipynb"
        submission.parent.mkdir()
        shutil.copyfile(path, submission)
        cmd = [sys.executable, "-m", "otter", "run", "-a", str(b.autograder), "-o", tmp, "--no-logo", str(submission)]
        with open(Path(tmp) / "otter.log", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=env,
                                    start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_tree(proc.pid)
                proc.wait()
                return _failed(b, str(path), f"time limit of {timeout:g} s exceeded: the notebook did not finish",
                               time.perf_counter() - start)
        results = Path(tmp) / "results.json"
        if proc.returncode != 0 or not results.is_file():
            tail = "\n".join((Path(tmp) / "otter.log").read_text(errors="replace").strip().splitlines()[-8:])
            return _failed(b, str(path), f"the grader could not run the notebook (otter status {proc.returncode}): "
                                         f"{tail}", time.perf_counter() - start)
        report = json.loads(results.read_text())
    by_name = {t["name"]: t for t in report.get("tests", []) if "max_score" in t}
    qs = []
    for q, points in b.points.items():
        t = by_name.get(q)
        if t is None:
            qs.append(QuestionGrade(q, 0.0, points, "no result for this question from the grader"))
        else:
            qs.append(QuestionGrade(q, float(t.get("score") or 0.0), float(t["max_score"]),
                                    str(t.get("output", "")).strip()))
    return Grade(str(path), name, sum(q.score for q in qs), b.max, qs, None, time.perf_counter() - start)


def grade(paths: Sequence[str | Path], out: str | Path = DEFAULT_OUT, *, timeout: float = DEFAULT_TIMEOUT_S,
          jobs: int = 1, progress: bool = True) -> list[Grade]:
    """Grade submitted notebooks against the autograders built in ``out`` (``jobs`` at a time, each with its share
    of the CPU threads); one Grade per path, in the order given."""
    if not isinstance(jobs, int) or jobs < 1:  # the same rule as book.run_figures: a bad count is refused, not bent
        raise AssignmentError(f"jobs must be a whole number >= 1, got {jobs!r}")
    built = load_manifest(out)
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    from tqdm.auto import tqdm

    bar = tqdm(total=len(paths), desc="grading", unit="notebook", disable=not progress)

    def one(p):
        try:
            g = grade_one(p, built, timeout=timeout, threads=threads)
        except Exception as exc:  # the grader itself must never lose the other submissions' grades
            g = Grade(str(p), None, 0.0, 0.0, error=f"grader error: {type(exc).__name__}: {exc}")
        bar.update()
        return g

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        grades = list(pool.map(one, paths))
    bar.close()
    return grades


# -------------------------------------------------------------------------------------------------------- book
def course_pages(root: str | Path | None = None) -> list[str]:
    """The book pages (``_toc.yml`` entries) of the Course part's assignments: ``book/course/<name>``."""
    return [f"{COURSE_PAGES.as_posix()}/{name}" for name in sources(root)]


def stage_course_pages(root: str | Path, out: str | Path | None = None) -> list[Path]:
    """Build the student versions (into ``root/_build/assignments`` unless ``out``) and copy each to
    ``root/book/course/<name>.ipynb``, the page _toc.yml lists. Student versions carry no solutions and only
    the public tests (the hidden ones live in the autograder zip)."""
    root = Path(root)
    built = build(out if out is not None else root / DEFAULT_OUT, root=root if (root / SOURCE_DIR).is_dir() else None)
    staged = []
    for name, b in built.items():
        page = root / COURSE_PAGES / f"{name}.ipynb"
        page.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(b.student, page)
        staged.append(page)
    return staged
