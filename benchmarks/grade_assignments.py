"""How long the course assignments take to build and to grade on this machine (for the instructor page).

    .venv/bin/python benchmarks/grade_assignments.py [--jobs 1] [--threads 2]

Builds every assignment into a temporary folder (``vlmflow.assignments.build``), then grades each solution and each
untouched student version with ``vlmflow.assignments.grade`` (otter-grader, one fresh kernel per notebook, top to
bottom, hidden tests included) and prints, per notebook, the score and the seconds, then the totals. A solution's
time is what running the finished notebook plus its tests costs; it is the bound an instructor's ``--timeout`` must
clear. The ratio line compares grading a solution with grading the empty student version (kernel start, imports and
model load are in both).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1, help="notebooks graded at once")
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of each notebook's kernel")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from vlmflow import assignments

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        built = assignments.build(tmp)
        build_s = time.perf_counter() - start
        print(f"build: {len(built)} assignments in {build_s:.1f} s")
        paths = [b.solution for b in built.values()] + [b.student for b in built.values()]
        start = time.perf_counter()
        grades = assignments.grade(paths, tmp, jobs=args.jobs, progress=False)
        total = time.perf_counter() - start
    print(f"{'notebook':48s} {'score':>9s} {'seconds':>8s}")
    for kind, part in (("solution", grades[: len(built)]), ("student", grades[len(built):])):
        for g in part:
            print(f"{g.assignment + ' (' + kind + ')':48s} {g.score:4g}/{g.max:<4g} {g.seconds:8.1f}")
    solution_s = sum(g.seconds for g in grades[: len(built)])
    student_s = sum(g.seconds for g in grades[len(built):])
    print(f"grading {len(paths)} notebooks: {total:.1f} s wall (jobs={args.jobs}, threads={args.threads})")
    print(f"solutions {solution_s:.1f} s, student versions {student_s:.1f} s, "
          f"ratio solution/student {solution_s / max(student_s, 1e-9):.2f}; slowest solution "
          f"{max(g.seconds for g in grades[: len(built)]):.1f} s")


if __name__ == "__main__":
    main()
