"""`vlmflow judge`: compare descriptions with the exact, lexical or LLM judge (vlmflow.judge).

    vlmflow judge --judge lexical --reference "A man rides a bike." --candidate "A person on a bicycle." --json
    vlmflow judge --judge llm --pairs pairs.jsonl --out judged.jsonl [--batch] [--model M] [--base-url URL]
    vlmflow judge --judge llm --pairs pairs.jsonl --label-page label.html     # human-labelling page, pre-filled
    vlmflow judge --judge lexical --validate labels.jsonl --json              # agreement with human labels
    vlmflow judge validate --labels labels.jsonl [--judges lexical,llm]       # every judge against the labels

Pairs files are JSONL with "reference" and "candidate" per line (other fields, e.g. "pair_id", are kept in the
output). The LLM judge reads its key from $OPENAI_API_KEY only; there is deliberately no --api-key option.
"""
from __future__ import annotations

import argparse
import json
import sys

from vlmflow.cli import common


def register(subparsers) -> None:
    p = subparsers.add_parser("judge", help="Score a candidate description against a reference (object P/R/F1).",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=("validate",), default=None,
                   help="The word validate measures each judge of --judges against the people's labels in --labels "
                        "(agreement and Cohen's kappa of their object decisions).")
    p.add_argument("--labels", metavar="JSONL",
                   help="The people's labels for 'validate', one JSON object per line, as the labelling page "
                        "exports them.")
    p.add_argument("--judges", default="lexical,llm",
                   help="The judges 'validate' measures, separated by commas. The LLM judge runs only when "
                        "$OPENAI_API_KEY is set, and is reported as not run otherwise. Default: lexical,llm.")
    p.add_argument("--judge", choices=("exact", "lexical", "llm"), default="lexical",
                   help="Which judge: exact (toy-world descriptions only), lexical (English, the CHAIR word lists, "
                        "offline) or llm (an OpenAI-compatible model). Default: lexical.")
    p.add_argument("--reference", help="The reference description (e.g. the run without knockout).")
    p.add_argument("--candidate", help="The candidate description (e.g. a knocked-out run).")
    p.add_argument("--pairs", help="A JSONL file with one pair per line, each with 'reference' and 'candidate'.")
    p.add_argument("--out", help="The JSONL file the judged --pairs are written to. Default: standard output.")
    p.add_argument("--json", action="store_true",
                   help="Print one JSON object: the judgment of a single pair, or the summary of --pairs.")
    p.add_argument("--label-page", metavar="HTML",
                   help="Write a human-labelling page for --pairs, pre-filled with the judge's answers.")
    p.add_argument("--validate", metavar="LABELS",
                   help="Measure the judge's agreement with the human labels in this JSONL file.")
    p.add_argument("--tolerance", type=common.fraction, default=0.1,
                   help="How far precision and recall may differ and still count as agreement in --validate, "
                        "between 0 and 1. Default: 0.1.")
    p.add_argument("--allow-failures", action="store_true",
                   help="Exit with 0 even when some judgments of --pairs failed (they are reported and left out of "
                        "the summary); without it, any failed judgment makes the exit code 1.")
    g = p.add_argument_group("LLM judge")
    g.add_argument("--model", default=None, help="The judge model's name. Default: gpt-4o-2024-08-06.")
    g.add_argument("--base-url", default=None,
                   help="An OpenAI-compatible endpoint. Default: $OPENAI_BASE_URL, else OpenAI's.")
    g.add_argument("--batch", action="store_true",
                   help="Use the Batch API (half the price; results arrive within 24 hours).")
    g.add_argument("--cache-dir", default=None,
                   help="The folder that caches judgments. Default: ~/.cache/vlmflow/judge.")
    g.add_argument("--concurrency", type=common.positive_int, default=8,
                   help="How many requests run in parallel (at least 1). Default: 8.")
    g.add_argument("--timeout", type=common.positive_float, default=120.0,
                   help="Seconds each request may take. Default: 120.")
    g.add_argument("--max-attempts", type=common.positive_int, default=5,
                   help="Attempts per pair before its judgment is recorded as failed (at least 1). Default: 5.")
    p.add_argument("--no-progress", action="store_true", help="Show no progress bar.")
    p.set_defaults(func=run)


def _judge(args):
    from vlmflow.judge import get_judge

    if args.judge == "exact":  # typed or filed text: refuse words outside the toy world rather than skip them
        return get_judge("exact", strict=True)
    if args.judge != "llm":
        return get_judge(args.judge)
    return get_judge("llm", **_llm_options(args))


def _llm_options(args) -> dict:
    """The LLM judge's options from the command line (its key comes from the environment only)."""
    options = {"base_url": args.base_url, "concurrency": args.concurrency, "timeout": args.timeout,
               "max_attempts": args.max_attempts}
    if args.model:
        options["model"] = args.model
    if args.cache_dir:
        options["cache_dir"] = args.cache_dir
    return options


def _row(judgment) -> dict:
    return {"precision": judgment.precision, "recall": judgment.recall, "f1": judgment.f1,
            "tp": [r for r, _ in judgment.tp], "fp": list(judgment.fp), "fn": list(judgment.fn),
            "tp_pairs": [list(p) for p in judgment.tp], "reference_objects": list(judgment.reference_objects),
            "candidate_objects": list(judgment.candidate_objects), "failed": judgment.failed}


def _read_pairs(path: str) -> list[dict]:
    from vlmflow.errors import read_user_text
    from vlmflow.judge import JudgeError

    rows = []
    for n, line in enumerate(read_user_text(path, "pairs file", JudgeError).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not (isinstance(row, dict) and isinstance(row.get("reference"), str)
                    and isinstance(row.get("candidate"), str)):
                raise ValueError("needs a JSON object with string fields 'reference' and 'candidate'")
        except ValueError as exc:
            raise JudgeError(f"{path} line {n}: {exc}") from None
        row["_line"] = n
        rows.append(row)
    if not rows:
        raise JudgeError(f"pairs file {path} holds no pairs (one JSON object per line with 'reference' and "
                         f"'candidate')")
    return rows


def _judge_rows(judge, rows, args, source: str):
    from vlmflow.judge import JudgeError

    pairs = [(r["reference"], r["candidate"]) for r in rows]
    if args.judge == "exact":  # refusals name the line
        for row, (reference, candidate) in zip(rows, pairs):
            try:
                judge.judge(reference, candidate)
            except JudgeError as exc:
                raise JudgeError(f"{source} line {row.get('_line', '?')}: {exc}") from None
    if args.judge == "llm":
        return judge.judge_many(pairs, progress=not args.no_progress, batch=args.batch)
    return judge.judge_many(pairs, progress=not args.no_progress)


def _failed(judgments, args, where: str) -> int:
    """Exit code for a batch: 1 (with one line naming the count and the reasons) if any judgment failed, unless
    --allow-failures; scripts must not read a batch with failures as a success."""
    failed = [j for j in judgments if not j.ok]
    if not failed:
        return 0
    reasons = sorted({j.failed for j in failed})
    line = (f"{len(failed)} of {len(judgments)} judgments failed ({'; '.join(r[:120] for r in reasons[:3])}"
            f"{'; ...' if len(reasons) > 3 else ''}); {where}")
    if args.allow_failures:
        print(f"vlmflow: warning: {line}", file=sys.stderr)
        return 0
    print(f"vlmflow: error: {line}; rerun to retry them, or pass --allow-failures", file=sys.stderr)
    return 1


def run(args) -> int:
    from vlmflow.judge import JudgeError, aggregate

    if args.action == "validate":
        return _validate_judges(args)
    if args.labels:
        raise JudgeError("--labels goes with 'vlmflow judge validate --labels FILE'")
    for option, path in (("--out", args.out), ("--label-page", args.label_page)):
        if path:
            common.output_file(path, option)  # before any (paid) judging
    if args.pairs is None and (args.out or args.label_page):
        raise JudgeError("--out and --label-page go with --pairs FILE")
    if args.validate is None and args.pairs is None and (args.reference is None or args.candidate is None):
        raise JudgeError("give --reference and --candidate, or --pairs FILE (or --validate LABELS)")
    judge = _judge(args)
    if args.validate:
        from vlmflow.judge.validate import agreement, read_labels

        labels = read_labels(args.validate)
        rows = [{"reference": lab.reference, "candidate": lab.candidate, "_line": i + 1}
                for i, lab in enumerate(labels)]
        judgments = _judge_rows(judge, rows, args, args.validate)
        result = agreement(judgments, [lab.judgment() for lab in labels], args.tolerance)
        print(json.dumps(result.to_dict(), indent=None if args.json else 1))
        return _failed(judgments, args, "agreement counts only the others")
    if args.pairs:
        rows = _read_pairs(args.pairs)
        judgments = _judge_rows(judge, rows, args, args.pairs)
        for row in rows:
            row.pop("_line", None)
        if args.label_page:
            from vlmflow.judge.label import write_label_page

            write_label_page(args.label_page, rows, judgments)
            print(f"wrote {args.label_page} ({len(rows)} pairs)", file=sys.stderr)
        lines = [json.dumps({**row, "judge": args.judge, **_row(j)}, ensure_ascii=False) for row, j in zip(rows, judgments)]
        if args.out:
            from vlmflow.atomic import atomic_write

            atomic_write(args.out, "".join(line + "\n" for line in lines))
        elif not args.label_page:
            sys.stdout.write("".join(line + "\n" for line in lines))
        summary = aggregate(judgments).to_dict()
        if getattr(judge, "last_run", None) is not None:
            summary["usage"] = judge.last_run.__dict__ | {"summary": judge.last_run.summary()}
        print(json.dumps(summary) if args.json else summary["aggregation"], file=sys.stderr)
        return _failed(judgments, args, f"their rows in {args.out or 'the output'} carry the reason")
    judgment = judge.judge(args.reference, args.candidate)
    if args.json:
        print(json.dumps(_row(judgment), ensure_ascii=False))
    else:
        if judgment.failed:
            print(f"failed: {judgment.failed}")
            return 1
        print(f"precision {judgment.precision:.3f}  recall {judgment.recall:.3f}  F1 {judgment.f1:.3f}")
        print(f"TP {[f'{r} = {c}' for r, c in judgment.tp]}\nFP {list(judgment.fp)}\nFN {list(judgment.fn)}")
    return 0 if judgment.ok else 1


def _validate_judges(args) -> int:
    """`vlmflow judge validate --labels FILE`: every judge of --judges against the people's labels."""
    from vlmflow.human_eval import validate_judges
    from vlmflow.judge import JudgeError
    from vlmflow.judge.validate import read_labels

    if not args.labels:
        raise JudgeError("'vlmflow judge validate' needs --labels FILE (the people's labels, JSONL)")
    names = [n.strip() for n in args.judges.split(",") if n.strip()]
    unknown = [n for n in names if n not in ("exact", "lexical", "llm")]
    if unknown or not names:
        raise JudgeError(f"--judges {args.judges!r}: unknown judges {unknown}; use exact, lexical and/or llm")
    labels = read_labels(args.labels)
    options = {"exact": {"strict": True}, "llm": _llm_options(args)}
    result = validate_judges(labels, names, args.tolerance, options, progress=not args.no_progress)
    result["labels"] = str(args.labels)
    print(json.dumps(result, indent=None if args.json else 1))
    return 0
