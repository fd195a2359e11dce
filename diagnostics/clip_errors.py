"""Which part of a clip description's event clause is wrong: the kind of change, the object, or the detail.

``clips.recall_by_family`` (on the clip model's card) says which events a describer misses, not why: a move counts as
missed whether the clause named another kind of change, another object or another place. This script generates the
greedy descriptions of held-out clips and sets each reference event beside the candidate clause at the same index
(clauses come in the clip's frame order; a missing clause counts as such), then counts per event kind:

- ``kind``: the clause names the right kind of change (the rest is counted only then);
- ``object``: the clause names the changed object exactly, and each of its words (shape, colour, size); ``copied``:
  the named object is another one of the first frame's (the failure that the event attribute heads aim at);
- ``detail``: a recolour's new colour, a move's new place; for a move also the place's row word and column word
  (``scenes.position_axes``), since the toy Qwen2-VL tells rows apart far better than columns
  (``diagnostics/position_axes.py``);
- ``exact``: the whole fact right (what ``recall_by_family`` counts, up to the index alignment).

    .venv/bin/python diagnostics/clip_errors.py toy:qwen2-vl --n 96

Measured 2026-12-01 (2-core CPU, 96 val clips, seed 0, 186 events: 41 appears, 38 disappears, 48 moves, 59
recolours). ``qwen2vl_e8`` (``toy:qwen2-vl`` until that day): the kind is right in 171 of 186 events (10 moves called
recolours). Given the right kind, the object is exact in 30/40 appears, 14/37 disappears, 25/38 moves and 39/56
recolours (another first-frame object named instead in 8 / 13 / 10 / 12); the recolour's new colour is right in
54/56, the move's new place in 7/38: its row word in 13 and its column word in 18, both near chance (about a third).
A move comes out whole in 4 of 48. The shipped ``toy:qwen2-vl`` (``qwen2vl_e11``, trained with the event place heads):
kind right in 174; objects exact 35/41, 16/36, 23/44, 36/53; new colour 51/53; the move's place 8/44 (row 15, column
19); a move whole in 5 of 48. The model finds what moved and does not know where it went, not even the row it tells
apart on still scenes.
"""
from __future__ import annotations

import argparse
from collections import Counter

ATTRIBUTES = ("shape", "color", "size")
# The parts only some event kinds have: a detail (a recolour's new colour, a move's new place) and the place's axes.
PART_KINDS = {"detail": ("recolor", "move"), "row": ("move",), "column": ("move",)}


def clause_errors(vlm, n: int = 96, seed: int = 0, split: str = "val", batch_size: int = 8) -> Counter:
    """Counts ``(event kind, part)`` over the events of ``n`` clips of ``split``: parts ``events``, ``missing``,
    ``kind`` and, given the right kind, ``object``, ``copied``, ``exact``, each attribute, ``detail`` and (moves)
    ``row`` / ``column``; ``(kind, "called <other kind>")`` for a wrong kind."""
    from vlmflow.adapters.base import Video
    from vlmflow.toy.clips import DESCRIBE_VIDEO_PROMPT, clip_facts, make_clip, parse_clip
    from vlmflow.toy.scenes import POSITIONS, position_axes

    counts = Counter()
    for start in range(0, n, batch_size):
        clips = [make_clip(seed, split, i) for i in range(start, min(n, start + batch_size))]
        batch = vlm.prepare([Video(c.images) for c in clips], DESCRIBE_VIDEO_PROMPT)
        gens = vlm.generate_batch(batch, max_new_tokens=64)
        for clip, gen in zip(clips, gens, strict=True):
            first_objects, reference = clip_facts(clip)
            _, candidate = parse_clip(gen.text)
            for i, (kind, obj, detail) in enumerate(reference):
                counts[kind, "events"] += 1
                if i >= len(candidate):
                    counts[kind, "missing"] += 1
                    continue
                said_kind, said_obj, said_detail = candidate[i]
                if said_kind != kind:
                    counts[kind, f"called {said_kind}"] += 1
                    continue
                counts[kind, "kind"] += 1
                counts[kind, "object"] += said_obj == obj
                counts[kind, "copied"] += said_obj != obj and said_obj in first_objects
                counts[kind, "exact"] += (said_obj, said_detail) == (obj, detail)
                for attribute in ATTRIBUTES:
                    counts[kind, attribute] += getattr(said_obj, attribute) == getattr(obj, attribute)
                if kind in PART_KINDS["detail"]:
                    counts[kind, "detail"] += said_detail == detail
                if kind in PART_KINDS["row"] and said_detail in POSITIONS:
                    for axis, said, true in zip(("row", "column"), position_axes(said_detail), position_axes(detail)):
                        counts[kind, axis] += said == true
    return counts


def table(counts: Counter) -> str:
    """One markdown row per event kind: the counts of ``clause_errors``, each part over the events whose kind was
    named right (``kind``), the kind over all events."""
    from vlmflow.toy.clips import EVENT_KINDS

    parts = ("object", "copied", *ATTRIBUTES, "detail", "row", "column", "exact")
    rows = ["| event | n | missing | kind right | " + " | ".join(parts) + " |",
            "|---" * (4 + len(parts)) + "|"]
    for kind in EVENT_KINDS:
        n, right = counts[kind, "events"], counts[kind, "kind"]
        if not n:
            continue
        cells = [f"{counts[kind, p]}/{right}" if kind in PART_KINDS.get(p, EVENT_KINDS) else "-" for p in parts]
        rows.append(f"| {kind} | {n} | {counts[kind, 'missing']} | {right} | " + " | ".join(cells) + " |")
    wrong = sorted((k, p, c) for (k, p), c in counts.items() if p.startswith("called "))
    return "\n".join(rows) + "\n\nwrong kind: " + (", ".join(f"{k} {p} x{c}" for k, p, c in wrong) or "none")


def main() -> None:
    import vlmflow as vf

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="toy:qwen2-vl or a model folder with a video input")
    parser.add_argument("--n", type=int, default=96, help="held-out clips (default 96)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    for name in args.models:
        print(f"## {name}\n\n{table(clause_errors(vf.load(name), args.n, args.seed, args.split))}\n")


if __name__ == "__main__":
    main()
