"""One-to-one matching of two object multisets into TP / FP / FN.

Two entry points, both multiset aware (two "dog"s in the reference and one in the candidate give one TP and one FN):
  * `match_by_key`: objects match when a key function gives equal values (the exact judge's (size, colour, shape)
    triple, the lexical judge's COCO category). Greedy in reference order is optimal for an equality relation.
  * `apply_pairs`: checks and applies a matching proposed by someone else (the LLM judge's answer, a human label):
    every pair must name one still-unused object on each side; unmatched objects become FN / FP.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

from vlmflow.judge.base import JudgeError

T = TypeVar("T")


class MatchError(JudgeError):
    """A proposed matching names an object that is not in (or already used up from) one of the lists."""


def match_by_key(
    reference: Sequence[T], candidate: Sequence[T], key: Callable[[T], Hashable] = lambda x: x
) -> tuple[list[tuple[T, T]], list[T], list[T]]:
    """(tp pairs, fp, fn) pairing objects with equal keys, each object used at most once.

    The order of the output follows the input: tp and fn in reference order, fp in candidate order.
    """
    free: dict[Hashable, list[int]] = defaultdict(list)  # key -> unused candidate indices, in order
    for j, obj in enumerate(candidate):
        free[key(obj)].append(j)
    tp, fn, used = [], [], set()
    for obj in reference:
        slots = free.get(key(obj))
        if slots:
            j = slots.pop(0)
            used.add(j)
            tp.append((obj, candidate[j]))
        else:
            fn.append(obj)
    fp = [obj for j, obj in enumerate(candidate) if j not in used]
    return tp, fp, fn


def normalise_name(name: str) -> str:
    """Case- and space-insensitive form used to compare object names proposed by an LLM or a human."""
    return " ".join(str(name).lower().split())


def apply_pairs(
    reference: Sequence[str],
    candidate: Sequence[str],
    pairs: Iterable[tuple[str, str]],
    normalise: Callable[[str], str] = normalise_name,
) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(tp, fp, fn) from proposed (reference name, candidate name) pairs; raises MatchError on an invalid pair.

    Names are compared after `normalise`; the returned objects are the list entries themselves (original spelling).
    """
    free_ref: dict[str, list[int]] = defaultdict(list)
    free_cand: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(reference):
        free_ref[normalise(name)].append(i)
    for j, name in enumerate(candidate):
        free_cand[normalise(name)].append(j)
    used_ref, used_cand, tp = set(), set(), []
    for k, (ref_name, cand_name) in enumerate(pairs):
        slots_r, slots_c = free_ref.get(normalise(ref_name)), free_cand.get(normalise(cand_name))
        if not slots_r:
            raise MatchError(f"match {k}: reference object {ref_name!r} is not in the reference list "
                             f"{list(reference)!r} (or is matched more often than it occurs)")
        if not slots_c:
            raise MatchError(f"match {k}: candidate object {cand_name!r} is not in the candidate list "
                             f"{list(candidate)!r} (or is matched more often than it occurs)")
        i, j = slots_r.pop(0), slots_c.pop(0)
        used_ref.add(i)
        used_cand.add(j)
        tp.append((reference[i], candidate[j]))
    tp.sort(key=lambda p: _index_of(reference, p[0]))
    fn = [name for i, name in enumerate(reference) if i not in used_ref]
    fp = [name for j, name in enumerate(candidate) if j not in used_cand]
    return tp, fp, fn


def _index_of(seq: Sequence[str], item: str) -> int:
    return seq.index(item)
