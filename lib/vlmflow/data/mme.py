"""MME question files: ``image_name<TAB>question<TAB>Yes/No`` per line, two questions per image.

The subtask is the file's stem (``existence``, ``count``, ``position``, ``color``); the image id is the number in the
image name (``000000006040.jpg`` -> 6040, a COCO val2017 id). A fourth column, as in MME's example result files, is
kept as the model's ``response`` (an MME result file). The question files come through `vlmflow.data.fetch("mme")`;
MME's images are not shipped.

Scoring: `vlmflow.scoring.score_yes_no(records, answers)` scores by MME's own ``eval_tool/calculation.py`` by
default: ``rule="mme"`` (lower-case; exact yes/no, else yes/no in the first 4 characters, else wrong) and
``pairing="adjacent"`` (ACC+ over consecutive lines, two at a time, in file order). Score each subtask on its own
(`vlmflow.scoring.score_groups(records, "subtask")`): ``Score.mme_score`` is MME's 100 * (ACC + ACC+) and
``.yes_metrics()`` its precision and recall over the parseable answers. ``pairing="image"`` groups by
`MmeRecord.image_key` instead (equal on the official files, whose two lines per image are adjacent).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import ClassVar

from vlmflow.errors import VlmflowError

MME_SUBTASKS = ("existence", "count", "position", "color")


class MmeFormatError(VlmflowError):
    pass


@dataclass(frozen=True)
class MmeRecord:
    question_id: str  # "<subtask>/<image stem>/<k>", k = the question's rank among that image's questions
    subtask: str
    image: str
    image_id: int | str  # int when the image stem is a number (COCO), else the stem
    question: str
    label: str  # the true answer, "yes" | "no"
    response: str | None = None

    # MME's official scoring (`vlmflow.scoring.score_yes_no` defaults)
    scoring: ClassVar[dict] = {"rule": "mme", "pairing": "adjacent", "pair_by": attrgetter("image_key")}

    @property
    def image_key(self) -> tuple[str, int | str]:
        """The unit ACC+ pairs by: one image within one subtask."""
        return (self.subtask, self.image_id)


def read_mme(path: Path | str, subtask: str | None = None) -> list[MmeRecord]:
    """Read one MME subtask file; raises MmeFormatError naming file and line on a malformed line."""
    path = Path(path)
    subtask = subtask or path.stem
    seen: Counter = Counter()
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) not in (3, 4):
            raise MmeFormatError(f"{path}:{lineno}: expected 3 or 4 tab-separated fields, got {len(parts)}")
        image, question, answer = (p.strip() for p in parts[:3])
        answer = answer.lower()
        if answer not in ("yes", "no"):
            raise MmeFormatError(f"{path}:{lineno}: answer {parts[2]!r} is not Yes/No")
        stem = image.rsplit(".", 1)[0]
        k = seen[image]
        seen[image] += 1
        out.append(MmeRecord(
            question_id=f"{subtask}/{stem}/{k}", subtask=subtask, image=image,
            image_id=int(stem) if stem.isdigit() else stem, question=question, label=answer,
            response=parts[3] if len(parts) == 4 else None,
        ))
    return out


def mme_questions(subtasks=MME_SUBTASKS, root: Path | str | None = None, progress: bool = True) -> list[MmeRecord]:
    """The shipped MME subtasks, through `fetch("mme")` (checksums verified)."""
    from vlmflow.data.fetcher import fetch

    folder = fetch("mme", root=root, progress=progress)
    return [r for s in subtasks for r in read_mme(folder / f"{s}.txt")]
