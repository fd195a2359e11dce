"""POPE object-existence questions: read the official files, or build new ones from COCO annotations.

Official files (AoiDragon/POPE ``output/coco/coco_pope_{random,popular,adversarial}.json``, via `fetch("pope")`) are
JSON Lines with ``question_id``, ``image`` (``COCO_val2014_%012d.jpg``), ``text`` and ``label``; `read_pope` also
accepts a JSON array of the same records. `build_pope` follows POPE's own generator (``utils.pope`` in that repo):
for each positive (an annotated category of the image) one negative (a category not annotated in the image and
not yet asked about it), interleaved yes/no, with negatives drawn

- ``random``: uniformly from the categories that occur in the annotations;
- ``popular``: the most frequent ones (number of images containing them);
- ``adversarial``: the ones that co-occur most often (in the same image) with that positive;

``popular``/``adversarial`` fall back to random when no candidate is left, as POPE does. Differences, on purpose:
positives are a seeded random choice among the image's categories (POPE takes the first ones of its list), and
ties in frequency / co-occurrence are broken by category id.

Scoring: `vlmflow.scoring.score_yes_no(records, answers)` parses answers with POPE's own rule by default
(``rule="pope"``, as RUCAIBox/POPE's ``evaluate.py``: "no" when the first sentence has the word No / not / no,
"yes" otherwise, so every answer counts), and ``.yes_metrics()`` gives POPE's accuracy, precision, recall, F1 and
yes ratio (NaN where the official script divides by zero). Pass ``rule="mme"`` for MME's stricter first-characters
rule (unparseable answers counted wrong); numbers from the two rules are not comparable.
"""
from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from vlmflow.errors import VlmflowError

SAMPLINGS = ("random", "popular", "adversarial")
TEMPLATE = "Is there {article} {object} in the image?"
_QUESTION = re.compile(r"^Is there an? (.+) in the image\?$")
_DIGITS = re.compile(r"(\d+)\D*$")


class PopeFormatError(VlmflowError):
    pass


@dataclass(frozen=True)
class PopeRecord:
    question_id: int
    image: str
    image_id: int | None  # the number in the image file name (COCO id), None if it has none
    question: str
    label: str  # the true answer, "yes" | "no"
    object: str | None = None  # the category asked about (parsed from the standard question text)
    sampling: str | None = None

    # POPE's official scoring (`vlmflow.scoring.score_yes_no` defaults); ACC+ pairs by image file
    scoring: ClassVar[dict] = {"rule": "pope", "pairing": "image", "pair_by": "image"}


def _image_id(image: str) -> int | None:
    m = _DIGITS.search(image)
    return int(m.group(1)) if m else None


def read_pope(path: Path | str) -> list[PopeRecord]:
    """Read a POPE question file (JSON Lines, or one JSON array). Sampling is taken from ``*_pope_<sampling>.json``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            rows = json.loads(stripped)
        else:
            rows = []
            for lineno, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as exc:
                        raise PopeFormatError(f"{path}:{lineno}: not a JSON record ({exc})") from None
    except ValueError as exc:
        raise PopeFormatError(f"{path}: not a JSON array ({exc})") from None
    sampling = next((s for s in SAMPLINGS if path.stem.endswith(f"_{s}")), None)
    out = []
    for i, row in enumerate(rows):
        missing = {"question_id", "image", "text", "label"} - set(row)
        if missing:
            raise PopeFormatError(f"{path}: record {i} lacks {sorted(missing)}")
        label = str(row["label"]).strip().lower()
        if label not in ("yes", "no"):
            raise PopeFormatError(f"{path}: record {i} has label {row['label']!r}, expected yes/no")
        m = _QUESTION.match(row["text"].strip())
        out.append(PopeRecord(question_id=row["question_id"], image=row["image"], image_id=_image_id(row["image"]),
                              question=row["text"], label=label, object=m.group(1) if m else None,
                              sampling=sampling))
    return out


def pope_questions(sampling: str = "random", root: Path | str | None = None, progress: bool = True) -> list[PopeRecord]:
    """The official POPE COCO file for one sampling, through `fetch("pope")` (checksums verified)."""
    from vlmflow.data.fetcher import fetch

    _check_sampling(sampling)
    return read_pope(fetch("pope", root=root, progress=progress) / f"coco_pope_{sampling}.json")


def _check_sampling(sampling: str) -> None:
    if sampling not in SAMPLINGS:
        raise VlmflowError(f"unknown POPE sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")


def pope_question(obj: str, template: str = TEMPLATE) -> str:
    article = "an" if obj[:1].lower() in "aeiou" else "a"
    return template.format(article=article, object=obj)


@dataclass(frozen=True)
class PopeStats:
    """Image-level statistics of the annotations POPE samples negatives from."""

    universe: tuple[str, ...]  # categories occurring in at least one image, in category-id order
    frequency: dict[str, int]  # images containing the category
    cooccurrence: dict[str, dict[str, int]]  # a -> b -> images containing both (a != b)
    popular: tuple[str, ...]  # universe by decreasing frequency (ties: category id)


def pope_stats(objects_by_image: dict[Any, set[str]], category_order: list[str]) -> PopeStats:
    rank = {c: i for i, c in enumerate(category_order)}
    freq: Counter = Counter()
    co: dict[str, Counter] = defaultdict(Counter)
    for objs in objects_by_image.values():
        freq.update(objs)
        for a in objs:
            for b in objs:
                if a != b:
                    co[a][b] += 1
    universe = tuple(sorted(freq, key=lambda c: rank.get(c, len(rank))))
    popular = tuple(sorted(universe, key=lambda c: (-freq[c], rank.get(c, len(rank)))))
    return PopeStats(universe, dict(freq), {a: dict(b) for a, b in co.items()}, popular)


def build_pope(coco, n_per_image: int = 6, sampling: str = "random", seed: int = 0,
               image_ids: list[int] | None = None, template: str = TEMPLATE) -> list[PopeRecord]:
    """POPE-style balanced yes/no questions from COCO annotations (see module docstring).

    `coco`: a `CocoSample` or a pycocotools ``COCO``. `n_per_image` counts questions (even: half yes, half no;
    POPE's own files use 6). Images with fewer than ``n_per_image / 2`` annotated categories are skipped, as in
    POPE. Frequencies and co-occurrences are counted over all images of `coco`; `image_ids` picks the ones asked.
    """
    _check_sampling(sampling)
    if n_per_image <= 0 or n_per_image % 2:
        raise VlmflowError(f"n_per_image must be a positive even number (half yes, half no), got {n_per_image}")
    raw = getattr(coco, "coco", coco)  # CocoSample -> its COCO
    cats = [raw.cats[i]["name"] for i in sorted(raw.cats)]
    present: dict[int, set[str]] = defaultdict(set)
    for ann in raw.anns.values():
        present[ann["image_id"]].add(raw.cats[ann["category_id"]]["name"])
    stats = pope_stats(present, cats)
    rank = {c: i for i, c in enumerate(cats)}
    rng = random.Random(seed)
    n_pos = n_per_image // 2

    out: list[PopeRecord] = []
    for image_id in sorted(raw.getImgIds()) if image_ids is None else list(image_ids):
        objs = present.get(image_id, set())
        if len(objs) < n_pos:
            continue
        file_name = raw.imgs[image_id]["file_name"]
        positives = rng.sample(sorted(objs, key=rank.__getitem__), n_pos)
        asked: set[str] = set()
        for pos in positives:
            asked.add(pos)
            neg = _negative(sampling, pos, objs, asked, stats, rng)
            if neg is None:
                raise VlmflowError(f"image {image_id}: no category left to ask a negative question about")
            asked.add(neg)
            for obj, label in ((pos, "yes"), (neg, "no")):
                out.append(PopeRecord(question_id=len(out) + 1, image=file_name, image_id=image_id,
                                      question=pope_question(obj, template), label=label, object=obj,
                                      sampling=sampling))
    return out


def _negative(sampling: str, pos: str, objs: set[str], asked: set[str], stats: PopeStats,
              rng: random.Random) -> str | None:
    def free(c: str) -> bool:
        return c not in objs and c not in asked

    if sampling == "popular":
        ranked = stats.popular
    elif sampling == "adversarial":
        co = stats.cooccurrence.get(pos, {})
        order = {c: i for i, c in enumerate(stats.universe)}
        ranked = sorted(co, key=lambda c: (-co[c], order[c]))
    else:
        ranked = ()
    for c in ranked:
        if free(c):
            return c
    candidates = [c for c in stats.universe if free(c)]  # random, and the fallback of the other two
    return rng.choice(candidates) if candidates else None
