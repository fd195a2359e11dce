"""`vlmflow judge`: compare descriptions with the exact, lexical or LLM judge (vlmflow.judge).

    vlmflow judge --judge lexical --reference "A man rides a bike." --candidate "A person on a bicycle." --json
    vlmflow judge --judge llm --pairs pairs.jsonl --out judged.jsonl [--batch] [--model M] [--base-url URL]
    vlmflow judge --judge llm --pairs pairs.jsonl --label-page label.html     # human-labelling page, pre-filled
    vlmflow judge --judge lexical --validate labels.jsonl --json              # agreement with human labels

Pairs files are JSONL with "reference" and "candidate" per line (other fields, e.g. "pair_id", are kept in the
output). The LLM judge reads its key from $OPENAI_API_KEY only; there is deliberately no --api-key option.
"""
from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("judge", help="score a candidate description against a reference (P/R/F1 of objects)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--judge", choices=("exact", "lexical", "llm"), default="lexical", help="which judge (default lexical)")
    p.add_argument("--reference", help="reference description (the unmasked run)")
    p.add_argument("--candidate", help="candidate description (e.g. a knocked-out run)")
    p.add_argument("--pairs", help="JSONL file of pairs (reference, candidate per line)")
    p.add_argument("--out", help="JSONL output for --pairs (default: stdout)")
    p.add_argument("--json", action="store_true", help="print JSON (single pair or summary)")
    p.add_argument("--label-page", metavar="HTML", help="write a human-labelling page for --pairs, pre-filled by the judge")
    p.add_argument("--validate", metavar="LABELS", help="agreement of the judge with human labels (JSONL)")
    p.add_argument("--tolerance", type=float, default=0.1, help="P/R agreement tolerance for --validate (default 0.1)")
    g = p.add_argument_group("LLM judge")
    g.add_argument("--model", default=None, help="model name (default gpt-4o-2024-08-06)")
    g.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL or OpenAI)")
    g.add_argument("--batch", action="store_true", help="use the Batch API (half price, results within 24 h)")
    g.add_argument("--cache-dir", default=None, help="judgment cache folder (default ~/.cache/vlmflow/judge)")
    g.add_argument("--concurrency", type=int, default=8, help="parallel requests (default 8)")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    g.add_argument("--max-attempts", type=int, default=5, help="attempts per pair before it is recorded failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _judge(args):
    from vlmflow.judge import get_judge

    if args.judge != "llm":
        return get_judge(args.judge)
    options = {"base_url": args.base_url, "concurrency": args.concurrency, "timeout": args.timeout,
               "max_attempts": args.max_attempts}
    if args.model:
        options["model"] = args.model
    if args.cache_dir:
        options["cache_dir"] = args.cache_dir
    return get_judge("llm", **options)


def _row(judgment) -> dict:
    return {"precision": judgment.precision, "recall": judgment.recall, "f1": judgment.f1,
            "tp": [r for r, _ in judgment.tp], "fp": list(judgment.fp), "fn": list(judgment.fn),
            "tp_pairs": [list(p) for p in judgment.tp], "reference_objects": list(judgment.reference_objects),
            "candidate_objects": list(judgment.candidate_objects), "failed": judgment.failed}


def _read_pairs(path: str) -> list[dict]:
    from vlmflow.judge import JudgeError

    rows = []
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as exc:
        raise JudgeError(f"cannot read pairs file {path}: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not (isinstance(row.get("reference"), str) and isinstance(row.get("candidate"), str)):
                raise ValueError("needs string fields 'reference' and 'candidate'")
        except (ValueError, AttributeError) as exc:
            raise JudgeError(f"{path} line {n}: {exc}") from None
        rows.append(row)
    return rows


def _judge_rows(judge, rows, args):
    pairs = [(r["reference"], r["candidate"]) for r in rows]
    if args.judge == "llm":
        return judge.judge_many(pairs, progress=not args.no_progress, batch=args.batch)
    return judge.judge_many(pairs, progress=not args.no_progress)


def run(args) -> int:
    from vlmflow.judge import JudgeError, aggregate

    judge = _judge(args)
    if args.validate:
        from vlmflow.judge.validate import agreement, read_labels

        labels = read_labels(args.validate)
        rows = [{"reference": lab.reference, "candidate": lab.candidate} for lab in labels]
        result = agreement(_judge_rows(judge, rows, args), [lab.judgment() for lab in labels], args.tolerance)
        print(json.dumps(result.to_dict(), indent=None if args.json else 1))
        return 0
    if args.pairs:
        rows = _read_pairs(args.pairs)
        judgments = _judge_rows(judge, rows, args)
        if args.label_page:
            from vlmflow.judge.label import write_label_page

            write_label_page(args.label_page, rows, judgments)
            print(f"wrote {args.label_page} ({len(rows)} pairs)", file=sys.stderr)
        lines = [json.dumps({**row, "judge": args.judge, **_row(j)}, ensure_ascii=False) for row, j in zip(rows, judgments)]
        if args.out:
            from pathlib import Path

            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp")
            tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            tmp.replace(out)
        elif not args.label_page:
            sys.stdout.write("".join(line + "\n" for line in lines))
        summary = aggregate(judgments).to_dict()
        if getattr(judge, "last_run", None) is not None:
            summary["usage"] = judge.last_run.__dict__ | {"summary": judge.last_run.summary()}
        print(json.dumps(summary) if args.json else summary["aggregation"], file=sys.stderr)
        return 0
    if args.reference is None or args.candidate is None:
        raise JudgeError("give --reference and --candidate, or --pairs FILE (or --validate LABELS)")
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
