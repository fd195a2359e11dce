"""Human evaluation of Image Re-prompting (the paper's second next check): can a judge stand in for people?

Where it sits: Image Re-prompting (``vlmflow.reprompt``) answers from a compressed context; its descriptions are
scored by a judge (``vlmflow.judge``) against the full-context description. This module makes the pairs people
label and measures each judge against their labels:

- :func:`reprompt_pairs`: per image, the full-context description and the description re-prompted from the query
  tokens plus the top K% image tokens (K = 0 is the query tokens alone), i.e. the pair a judge scores;
- :func:`label_page`: the labelling page (``vlmflow.judge.label``) with the image, the question, the full-context
  and the re-prompted answer, exporting labels as JSONL (``vlmflow.judge.validate.read_labels``);
- :func:`agreement_intervals`: object-decision agreement and Cohen's kappa of a judge against labels, with
  bootstrap intervals over images (``vlmflow.stats``);
- :func:`validate_judges`: the same, without intervals, for every judge named (``vlmflow judge validate --labels``);
  the LLM judge runs only when ``$OPENAI_API_KEY`` is set, and says so when it is not.

On the toy world the exact judge's reading of a pair (exact, by the scene grammar) stands in for people; no label
of a person is ever made up: real labels come only from a file people wrote.
"""
from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vlmflow.errors import VlmflowError
from vlmflow.stats import CI, bootstrap_ci

if TYPE_CHECKING:
    import pandas as pd

    from vlmflow.judge.base import Judgment

QUESTION = "describe the image"
NAMES = {"reference": "full-context answer", "candidate": "re-prompted answer"}


class HumanEvalError(VlmflowError):
    pass


def reprompt_pairs(vlm, images: Sequence[tuple[str, Any]], k_percents: Sequence[float] = (0, 5, 25), *,
                   select: str = "attention", turn: str = "single", max_new_tokens: int = 64) -> "pd.DataFrame":
    """Per (image, K): ``image``, ``k_percent``, ``question``, ``reference`` (the full-context description) and
    ``candidate`` (re-prompted from the query tokens + the top K% image tokens; K = 0: the query tokens alone).
    ``images``: (key, PIL image) pairs."""
    import pandas as pd

    from vlmflow.reprompt import answer, compress, describe

    rows = []
    for key, image in images:
        run = describe(vlm, image, QUESTION, max_new_tokens=max_new_tokens)
        for k in k_percents:
            ctx = compress(run, "query" if k == 0 else "query+topk", float(k), select, turn=turn)
            rows.append({"image": key, "k_percent": float(k), "question": QUESTION,
                         "reference": run.generation.text,
                         "candidate": answer(ctx, QUESTION, max_new_tokens=max_new_tokens).text})
    return pd.DataFrame(rows, columns=["image", "k_percent", "question", "reference", "candidate"])


def _data_uri(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def label_page(path, pairs: "pd.DataFrame", images: dict[str, Any] | None = None, prefill=None,
               title: str = "vlmflow: label re-prompted answers"):
    """Write the labelling page for re-prompting pairs (``reprompt_pairs``'s table); ``images``: key -> PIL image
    shown beside each pair; ``prefill``: judgments to start from (None: empty lists)."""
    from vlmflow.judge.label import write_label_page

    items = [{"pair_id": f"{r.image}/K{r.k_percent:g}", "reference": r.reference, "candidate": r.candidate,
              "question": r.question, "names": NAMES,
              **({"image": _data_uri(images[r.image])} if images and r.image in images else {})}
             for r in pairs.itertuples()]
    return write_label_page(path, items, prefill, title=title)


def _kappa_of_codes(codes: np.ndarray) -> float:
    """Cohen's kappa of decisions coded 2 * judge + truth (so one float array carries both raters)."""
    from vlmflow.judge.validate import cohens_kappa

    codes = np.asarray(codes, dtype=int)
    k = cohens_kappa((codes // 2).tolist(), (codes % 2).tolist())
    return float("nan") if k is None else float(k)


def shape_word(name: str) -> str:
    """A toy object's shape noun ("small red circle" -> "circle"): how the lexical judge, which reads object words
    and ignores attributes, names the objects the exact judge names by their triples."""
    return name.split()[-1].lower() if name.split() else name


def decision_rows(judged: Sequence["Judgment"], truth: Sequence["Judgment"], clusters: Sequence[Any],
                  align=None) -> "pd.DataFrame":
    """One row per aligned object decision: ``cluster`` (the pair's image), ``judge`` and ``truth`` (bool), and
    ``code`` = 2 * judge + truth. Pairs where either side failed are left out. ``align``: object name -> the key
    the two sides are aligned on (default: the normalised name; :func:`shape_word` for the lexical judge on toy
    descriptions)."""
    import pandas as pd

    from vlmflow.judge.validate import aligned_decisions

    if not len(judged) == len(truth) == len(clusters):
        raise HumanEvalError(f"{len(judged)} judgments, {len(truth)} labels and {len(clusters)} clusters")
    rows = []
    for j, t, c in zip(judged, truth, clusters):
        if not (j.ok and t.ok):
            continue
        mine, theirs, _ = aligned_decisions(j, t) if align is None else aligned_decisions(j, t, align)
        rows += [{"cluster": c, "judge": a, "truth": b, "code": 2 * int(a) + int(b)} for a, b in zip(mine, theirs)]
    return pd.DataFrame(rows, columns=["cluster", "judge", "truth", "code"])


def agreement_intervals(decisions: "pd.DataFrame", n_resamples: int = 1000, seed: int = 0) -> tuple[CI, CI]:
    """(agreement, Cohen's kappa) of the decisions with 95% bootstrap intervals over clusters (images)."""
    if decisions.empty:
        raise HumanEvalError("no aligned object decisions to compare")
    d = decisions.assign(same=(decisions.judge == decisions.truth).astype(float))
    agree = bootstrap_ci(d, value="same", cluster="cluster", n_resamples=n_resamples, seed=seed)
    kappa = bootstrap_ci(d, _kappa_of_codes, value="code", cluster="cluster", n_resamples=n_resamples, seed=seed)
    return agree, kappa


def llm_available() -> str | None:
    """None when the LLM judge can run here, else why not (its key comes from the environment only)."""
    return None if os.environ.get("OPENAI_API_KEY") else "not run: no OPENAI_API_KEY in the environment"


def validate_judges(labels, judges: Sequence[str] = ("lexical", "llm"), tolerance: float = 0.1,
                    judge_options: dict[str, dict] | None = None, progress: bool = False) -> dict[str, Any]:
    """Each judge against people's labels (``vlmflow.judge.validate.HumanLabel`` list): the agreement record
    (``Agreement.to_dict``: object agreement, Cohen's kappa, P/R agreement) per judge, or ``{"not_run": why}``."""
    from vlmflow.judge import get_judge
    from vlmflow.judge.validate import agreement

    out: dict[str, Any] = {"n_labels": len(labels), "labellers": sorted({lab.labeller for lab in labels if lab.labeller}),
                           "judges": {}}
    truth = [lab.judgment() for lab in labels]
    pairs = [(lab.reference, lab.candidate) for lab in labels]
    for name in judges:
        if name == "llm" and llm_available():
            out["judges"][name] = {"not_run": llm_available()}
            continue
        judge = get_judge(name, **dict((judge_options or {}).get(name, {})))
        judged = judge.judge_many(pairs, progress=progress)
        out["judges"][name] = agreement(judged, truth, tolerance).to_dict()
    return out


__all__ = ["NAMES", "QUESTION", "HumanEvalError", "agreement_intervals", "decision_rows", "label_page",
           "llm_available", "reprompt_pairs", "shape_word", "validate_judges"]
