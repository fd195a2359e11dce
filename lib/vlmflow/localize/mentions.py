"""Naming tokens: which generated token names which object (toy grammar or the lexical judge's CHAIR vocabulary),
mapped to tokens by char offsets from incremental decoding. Used by ``vlmflow.localize.dataset``."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vlmflow.localize.base import LocalizationError

if TYPE_CHECKING:
    from vlmflow.model import Generation


@dataclass(frozen=True)
class Mention:
    """One object named in a generated text. ``name``: the toy ``"size color shape"`` (attributes the text left out
    are omitted) or the COCO category; ``attributes``: the toy (shape, color, size) with None for unnamed ones;
    ``char``: offset of the naming word in the decoded text; ``token``: index into the generated tokens."""

    name: str
    category: str
    word: str
    char: int
    token: int = -1
    attributes: tuple[str | None, str | None, str | None] | None = None
    occurrence: int = 0  # 0 for the first mention of this name in the text, 1 for the second...


def token_spans(tokenizer, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """(decoded text, [start, end) char span of every token in it), by incremental decoding (works for subword,
    sentencepiece and word-level tokenizers alike). Special tokens decode to empty spans."""
    spans, prev = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True)
        start = len(prev) if text.startswith(prev) else _common_prefix(prev, text)
        spans.append((start, len(text)))
        prev = text
    return prev, spans


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


_TOY_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


def toy_mentions(text: str) -> list[Mention]:
    """Objects named in a toy description, each at the shape word that completes its phrase (``grammar.parse`` on
    growing prefixes, so the rules are exactly the parser's; "two red circles" gives two mentions at "circles")."""
    from vlmflow.judge.exact import object_name
    from vlmflow.toy.grammar import parse

    low = text.lower()
    out: list[Mention] = []
    seen: dict[str, int] = {}
    n_prev = 0
    for m in _TOY_WORD.finditer(low):
        objs = parse(low[: m.end()])
        for obj in objs[n_prev:]:
            name = object_name(obj)
            out.append(Mention(name, obj.shape, m.group(), m.start(), attributes=(obj.shape, obj.color, obj.size),
                               occurrence=seen.get(name, 0)))
            seen[name] = seen.get(name, 0) + 1
        n_prev = len(objs)
    return out


def coco_mentions(text: str, vocabulary=None) -> list[Mention]:
    """COCO categories named in an English text: the lexical judge's matches (`Vocabulary.matches`: greedy longest
    phrase over the CHAIR synonyms, blocking phrases kept, none across punctuation), with char offsets; the naming
    word is the phrase's last word ("hot **dog**", "wine **glasses**")."""
    from vlmflow.judge.lexical import LexicalJudge

    vocab = vocabulary or LexicalJudge().vocabulary
    found = [Mention(category, category, surface.split()[-1], start)
             for category, surface, start in vocab.matches(text)]
    seen: dict[str, int] = {}
    out = []
    for m in found:
        out.append(Mention(m.name, m.category, m.word, m.char, occurrence=seen.get(m.name, 0)))
        seen[m.name] = seen.get(m.name, 0) + 1
    return out


def mentions(gen: "Generation", tokenizer, kind: str, vocabulary=None) -> list[Mention]:
    """The objects ``gen`` names, each with the index of the generated token that holds its naming word."""
    text, spans = token_spans(tokenizer, gen.token_ids)
    if kind == "toy":
        found = toy_mentions(text)
    elif kind == "coco":
        found = coco_mentions(text, vocabulary)
    else:
        raise LocalizationError(f"unknown mention kind {kind!r}; use 'toy' or 'coco'")
    out = []
    for m in found:
        tok = next((i for i, (s, e) in enumerate(spans) if e > m.char and e > s), -1)
        if tok < 0:
            raise LocalizationError(f"no generated token covers char {m.char} ({m.word!r}) of {text!r}")
        out.append(Mention(m.name, m.category, m.word, m.char, tok, m.attributes, m.occurrence))
    return out
