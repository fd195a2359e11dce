"""The course assignments, graded for real with otter-grader (``vlmflow assignments build`` / ``grade``).

One session build of every assignment (student + autograder versions), then ONE grading run through the command
line with ``--json`` over every solution, every untouched student version, a plausible wrong submission of each
assignment (each the solution with one realistic bug put in by text replacement: the knockout on the wrong layers,
the mask added after the softmax, the uniform baseline that forgets the generated keys, ...), a submission whose
cell raises, one with deleted cells and one file that is not a notebook, all in the same run (so one student's
failure can be seen not to touch another's grade). A second small run stops a submission that never ends at its
time limit. Properties: solutions score full marks; student versions and wrong submissions score below the
maximum, losing exactly the questions the bug breaks; failures name the reason per question.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from vlmflow import assignments

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# assignment -> (label, text in the solution, replacement, the questions the bug must cost)
WRONG = {
    "a1_attention_by_role": [("uniform baseline over the prompt keys only",
                              "for j in range(p + 1)]", "for j in range(gen.prompt_length)]",
                              {"q3_attention_and_uniform", "q4_over_attended"})],
    "a2_knockout_mask": [("knockout on the wrong layers (every layer from 2 on)",
                          "if module.layer_idx in LAYERS:", "if module.layer_idx >= LAYERS.start:",
                          {"q3_model", "q4_compare"}),
                         ("mask added after the softmax",
                          "scores = q @ k.transpose(-1, -2) * scale + mask\n    return scores.softmax(-1) @ v",
                          "scores = q @ k.transpose(-1, -2) * scale\n    return (scores.softmax(-1) + mask) @ v",
                          {"q2_attention", "q3_model", "q4_compare"})],
    "a3_from_layer_sweep": [("knockout up to the layer instead of from it",
                             "layers=range(layer, L))", "layers=range(0, layer))", {"q2_sweep"})],
    "a4_localization": [("image-token grid transposed", "row, col = divmod(int(t), GRID)",
                         "col, row = divmod(int(t), GRID)", {"q1_token_box", "q2_hit", "q4_accuracy"})],
    "a5_reprompting": [("least attended image tokens chosen", "argsort(dim=-1, descending=True)",
                        "argsort(dim=-1)", {"q1_choose", "q2_accuracy"})],
}


def _edit(src: Path, dest: Path, old: str, new: str) -> Path:
    text = src.read_text()
    nb = nbformat.reads(text, as_version=4)
    hits = [c for c in nb.cells if old in c.source]
    assert len(hits) == 1, f"{src.name}: expected the text {old!r} in exactly one cell, found {len(hits)}"
    hits[0].source = hits[0].source.replace(old, new)
    nbformat.write(nb, dest)
    return dest


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("assignments")
    return out, assignments.build(out)


@pytest.fixture(scope="session")
def submissions(built, tmp_path_factory):
    """{kind: [(path, assignment, expectation)]}: every notebook the grading run grades."""
    _, b = built
    folder = tmp_path_factory.mktemp("submissions")
    subs: dict[str, list] = {"solution": [], "student": [], "wrong": [], "broken": []}
    for name, a in b.items():
        subs["solution"].append((a.solution, name, None))
        subs["student"].append((a.student, name, None))
        for i, (label, old, new, lost) in enumerate(WRONG[name]):
            subs["wrong"].append((_edit(a.solution, folder / f"{name}-wrong{i}.ipynb", old, new), name, (label, lost)))
    # a cell that raises half-way through question 1 (role_counts stays empty)
    raising = _edit(b["a1_attention_by_role"].solution, folder / "a1_attention_by_role-raises.ipynb",
                    "role_counts = {}\n", "role_counts = {}\nraise RuntimeError('not finished')\n")
    subs["broken"].append((raising, "a1_attention_by_role", "raises"))
    # the cells of question 2 (hit) deleted: the solution cell and its check
    nb = nbformat.read(b["a4_localization"].solution, as_version=4)
    nb.cells = [c for c in nb.cells if "def hit(" not in c.source and 'grader.check("q2_hit")' not in c.source]
    deleted = folder / "a4_localization-deleted-cells.ipynb"
    nbformat.write(nb, deleted)
    subs["broken"].append((deleted, "a4_localization", "deleted"))
    garbage = folder / "a3_from_layer_sweep-garbage.ipynb"
    garbage.write_text("this is not a notebook")
    subs["broken"].append((garbage, None, "garbage"))
    return subs


@pytest.fixture(scope="session")
def graded(built, submissions):
    """One `vlmflow assignments grade --json` run over every submission, two at a time."""
    out, _ = built
    paths = [str(p) for kind in submissions.values() for p, _, _ in kind]
    proc = subprocess.run([str(Path(sys.executable).parent / "vlmflow"), "assignments", "grade", *paths, "--json",
                           "--out", str(out), "--jobs", "2", "--timeout", "300"],
                          capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grades = json.loads(proc.stdout)
    assert [g["submission"] for g in grades] == paths, "one grade per submission, in the order given"
    return {g["submission"]: g for g in grades}


def test_build_writes_student_and_autograder_versions(built):
    out, b = built
    assert sorted(b) == sorted(assignments.sources()) and len(b) >= 5
    manifest = json.loads((out / assignments.MANIFEST).read_text())
    assert sorted(manifest) == sorted(b)
    for name, a in b.items():
        student = a.student.read_text()
        source = assignments.sources()[name].read_text()
        assert "BEGIN SOLUTION" in source and "BEGIN SOLUTION" not in student and "# SOLUTION" not in student
        # every hidden test lives only in the autograder zip; the student version carries only the public ones
        assert "hidden=True" not in student
        import zipfile

        with zipfile.ZipFile(a.autograder) as zf:
            tests = "".join(zf.read(n).decode() for n in zf.namelist() if n.startswith("tests/"))
        assert "hidden=True" in tests and "hidden=False" in tests, f"{name}: needs public and hidden tests"
        assert a.max == sum(a.points.values()) > 0


def test_every_solution_scores_full_marks(graded, submissions, built):
    _, b = built
    for path, name, _ in submissions["solution"]:
        g = graded[str(path)]
        assert g["error"] is None, g["error"]
        assert g["assignment"] == name and g["max"] == b[name].max
        assert g["score"] == g["max"], f"{name}: {[(q['name'], q['message']) for q in g['questions'] if q['score'] < q['max']]}"


def test_every_untouched_student_version_scores_below_the_maximum(graded, submissions):
    for path, name, _ in submissions["student"]:
        g = graded[str(path)]
        assert g["assignment"] == name and g["error"] is None
        assert g["score"] < g["max"], f"the student version of {name} scores full marks without any answer"


def test_a_plausible_wrong_submission_loses_the_questions_it_breaks(graded, submissions):
    for path, name, (label, lost) in submissions["wrong"]:
        g = graded[str(path)]
        assert g["assignment"] == name and g["error"] is None, g["error"]
        assert g["score"] < g["max"], f"{name} with '{label}' still scores full marks"
        failed = {q["name"] for q in g["questions"] if q["score"] < q["max"]}
        assert failed == lost, f"{name} with '{label}': lost points on {sorted(failed)}, expected {sorted(lost)}"
        for q in g["questions"]:
            if q["name"] in lost:
                assert "Test case failed" in q["message"], q["message"]


def test_broken_submissions_fail_per_question_with_a_reason(graded, submissions, built):
    _, b = built
    by_kind = {kind: (path, name) for path, name, kind in submissions["broken"]}
    g = graded[str(by_kind["raises"][0])]
    failed = {q["name"]: q["message"] for q in g["questions"] if q["score"] < q["max"]}
    assert set(failed) == {"q1_role_counts", "q2_group_shares"}, failed  # the rest of the notebook still ran
    assert "add up to 0" in failed["q1_role_counts"]
    g = graded[str(by_kind["deleted"][0])]
    failed = {q["name"]: q["message"] for q in g["questions"] if q["score"] < q["max"]}
    assert set(failed) == {"q2_hit", "q4_accuracy"}, failed
    assert g["score"] == b["a4_localization"].max - sum(b["a4_localization"].points[q] for q in failed)
    g = graded[str(by_kind["garbage"][0])]
    assert g["assignment"] is None and g["score"] == 0 and "not a readable notebook" in g["error"]


def test_a_submission_that_never_ends_is_stopped_and_fails_every_question(built, tmp_path):
    out, b = built
    hang = _edit(b["a2_knockout_mask"].solution, tmp_path / "a2_knockout_mask.ipynb",
                 "SOURCE, TARGET, LAYERS = ", "while True:\n    pass\nSOURCE, TARGET, LAYERS = ")
    missing = tmp_path / "nobody.ipynb"
    [g, none] = assignments.grade([hang, missing], out, timeout=8, progress=False)
    assert g.assignment == "a2_knockout_mask" and g.score == 0 and g.max == b["a2_knockout_mask"].max
    assert "time limit of 8 s exceeded" in g.error
    assert [q.name for q in g.questions] == list(b["a2_knockout_mask"].points)
    assert all(q.score == 0 and "time limit" in q.message for q in g.questions)
    assert none.assignment is None and "no such file" in none.error


def test_identify_reads_metadata_then_the_file_name(built, tmp_path):
    _, b = built
    renamed = tmp_path / "jane.ipynb"
    renamed.write_text(b["a5_reprompting"].student.read_text())
    assert assignments.identify(renamed, b) == "a5_reprompting"  # otter's metadata
    bare = tmp_path / "a3_from_layer_sweep-jane.ipynb"
    nb = nbformat.read(b["a3_from_layer_sweep"].student, as_version=4)
    nb.metadata.pop("otter")
    nbformat.write(nb, bare)
    assert assignments.identify(bare, b) == "a3_from_layer_sweep"  # the file name
    bare.rename(tmp_path / "other.ipynb")
    with pytest.raises(assignments.AssignmentError, match="other.ipynb"):
        assignments.identify(tmp_path / "other.ipynb", b)


@pytest.mark.parametrize("jobs", [0, -2, 1.5, "2"])
def test_a_bad_job_count_is_refused_before_anything_is_graded(tmp_path, jobs):
    # the same rule as `vlmflow book build --jobs`: a count that is not a whole number >= 1 is an error naming it
    with pytest.raises(assignments.AssignmentError, match=f"jobs must be a whole number >= 1, got {jobs!r}"):
        assignments.grade([tmp_path / "a1_attention_by_role.ipynb"], tmp_path / "nothing-built", jobs=jobs)
