"""`vlmflow assignments ...`: the course assignments (solution notebooks in assignments/, graded with otter-grader).

    vlmflow assignments list
    vlmflow assignments build [--out DIR] [--only NAME ...]
    vlmflow assignments grade PATH... [--json] [--out DIR] [--timeout S] [--jobs N]

`build` writes, per assignment, DIR/<name>/student/<name>.ipynb (hand these out) and DIR/<name>/autograder/ (the
solution and the zip with every public and hidden test). `grade` grades submitted notebooks locally (no server, no
Docker) and prints each one's score and maximum; with --json a list of {"assignment", "score", "max", ...}. It builds
the autograders first when DIR has none. The pipeline lives in vlmflow.assignments.
"""
from __future__ import annotations

import json


def register(subparsers) -> None:
    from vlmflow.assignments import DEFAULT_OUT, DEFAULT_TIMEOUT_S

    p = subparsers.add_parser("assignments", help="Course assignments: build the student and autograder versions, grade submissions.",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="assignments_command", required=True, metavar="ACTION")

    ls = sub.add_parser("list", help="List the assignments and their points.",
                        description="List the course assignments (assignments/*.ipynb) and the points of each.")
    ls.set_defaults(func=_list)

    b = sub.add_parser("build", help="Write the student and autograder versions of every assignment.",
                       description="Write the student and autograder versions of every assignment (otter-grader).")
    b.add_argument("--out", default=str(DEFAULT_OUT), help=f"The output folder. Default: {DEFAULT_OUT}.")
    b.add_argument("--only", nargs="+", metavar="NAME", help="Build only these assignments.")
    b.set_defaults(func=_build)

    g = sub.add_parser("grade", help="Grade submitted notebooks; print the score and maximum per submission.",
                       description="Grade submitted notebooks with the built autograders; print the score and the "
                                   "maximum per submission.")
    g.add_argument("paths", nargs="+", metavar="PATH", help="The submitted .ipynb files (any mix of assignments).")
    g.add_argument("--json", action="store_true", help="Print a JSON list of {assignment, score, max, ...}.")
    g.add_argument("--out", default=str(DEFAULT_OUT),
                   help=f"The folder of the built autograders (built when missing). Default: {DEFAULT_OUT}.")
    g.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"Seconds before a submission is stopped and failed. Default: {DEFAULT_TIMEOUT_S:g}.")
    g.add_argument("--jobs", type=int, default=1, help="How many submissions are graded at once. Default: 1.")
    g.set_defaults(func=_grade)


def _list(args) -> int:
    from vlmflow import assignments

    for name, path in assignments.sources().items():
        print(f"{name:24s} {path}")
    return 0


def _build(args) -> int:
    from vlmflow import assignments

    for name, b in assignments.build(args.out, names=args.only).items():
        print(f"{name}: {b.max:g} points in {len(b.points)} questions")
        print(f"  student:    {b.student}")
        print(f"  autograder: {b.autograder}")
    return 0


def _grade(args) -> int:
    from pathlib import Path

    from vlmflow import assignments

    if not (Path(args.out) / assignments.MANIFEST).is_file():
        assignments.build(args.out)
    grades = assignments.grade(args.paths, args.out, timeout=args.timeout, jobs=args.jobs, progress=not args.json)
    if args.json:
        print(json.dumps([g.to_dict() for g in grades], indent=1))
        return 0
    for g in grades:
        print(f"{g.submission}: {g.assignment or '?'} {g.score:g} / {g.max:g}" + (f"  [{g.error}]" if g.error else ""))
        for q in g.questions:
            if q.score < q.max and not g.error:
                first = next((ln.strip() for ln in q.message.splitlines() if "Error" in ln or "message" in ln),
                             q.message.splitlines()[0] if q.message else "")
                print(f"    {q.name}: {q.score:g} / {q.max:g}  {first}")
    return 0
