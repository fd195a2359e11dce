"""Token roles: which part of the prompt each position of a (left-padded) batch belongs to.

Data flow: an adapter (``vlmflow.adapters``) builds the prompt from ``(role, text)`` segments, runs the model's own
processor, and calls :func:`roles_from_segments` to label every position of the processor's ``input_ids``. The
resulting :class:`TokenRoles` is what knockouts (``vlmflow.knockout``) and recordings (``vlmflow.record``) are
resolved against inside the attention function (``vlmflow.attention``).

Roles (a role id is the index in ``ROLES``):
  pad        left padding of a batch (attention_mask == 0)
  bos        the tokenizer's BOS token at the start of the prompt
  system     the system prompt
  user       template text before the user's content (``" USER: "`` for LLaVA-1.5, ``<|im_start|>user\\n`` for Qwen),
             and the non-image tokens the processor puts inside the image block (``<img>``, ``<|vision_start|>``...)
  image      image-token positions (the processor's expanded image block)
  query      the user's own words
  assistant  template text after the user's words
  generated  every position >= the prompt length (tokens fed back during decoding)

Groups are unions of roles: ``text`` = every non-image prompt position (the paper's T_txt, as in the official code),
``prompt`` = text + image, ``template`` = system + user + assistant, ``all`` = prompt + generated.

Frames: ``TokenRoles.frames`` gives every image-role position the index of the frame it shows (-1 elsewhere), so
that a knockout can name frames (``Knockout("image", "generated", source_frames=[0])``). A prompt with one image
is frame 0 throughout (the default when ``frames`` is None); a video prompt (``Qwen2VLAdapter.prepare_video``)
numbers its temporal patches 0, 1, ... in the order the model reads them.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vlmflow.errors import NoImageTokensError, UnknownRoleError, VlmflowError

if TYPE_CHECKING:  # torch stays out of `import vlmflow.roles` for the CLI's sake
    import torch

ROLES: tuple[str, ...] = ("pad", "bos", "system", "user", "image", "query", "assistant", "generated")
ROLE_ID: dict[str, int] = {name: i for i, name in enumerate(ROLES)}
PAD, BOS, SYSTEM, USER, IMAGE, QUERY, ASSISTANT, GENERATED = range(len(ROLES))

_TEXT = ("bos", "system", "user", "query", "assistant")
GROUPS: dict[str, tuple[str, ...]] = {
    "text": _TEXT,
    "prompt": _TEXT + ("image",),
    "template": ("system", "user", "assistant"),
    "all": _TEXT + ("image", "generated"),
}


class RoleAlignmentError(VlmflowError):
    """The processor's input_ids do not match the tokenized prompt segments (prefix + image block + suffix)."""


def resolve(names: str | Iterable[str]) -> frozenset[str]:
    """Role and group names (one or an iterable) -> the frozenset of role names they cover."""
    if isinstance(names, str):
        names = (names,)
    out: set[str] = set()
    for name in names:
        if not isinstance(name, str):
            raise UnknownRoleError(f"role name must be a string, got {name!r}")
        if name in ROLE_ID:
            out.add(name)
        elif name in GROUPS:
            out.update(GROUPS[name])
        else:
            raise UnknownRoleError(
                f"unknown role or group {name!r}; roles: {', '.join(ROLES)}; groups: {', '.join(GROUPS)}"
            )
    if not out:
        raise UnknownRoleError("empty role selection: name at least one role or group")
    return frozenset(out)


def role_id_mask(names: str | Iterable[str]) -> list[bool]:
    """Per role id, whether it is selected by ``names``: a lookup table indexable by a role-id tensor."""
    chosen = resolve(names)
    return [name in chosen for name in ROLES]


@dataclass(frozen=True, eq=False)
class TokenRoles:
    """A role id per position of a left-padded prompt batch.

    ids: LongTensor[B, T] (T = prompt length incl. padding); every position >= ``prompt_length`` is ``generated``,
    so masks extend to any length during decoding.
    """

    ids: "torch.Tensor"  # LongTensor[B, T]
    prompt_length: int
    frames: "torch.Tensor | None" = None  # LongTensor[B, T]: frame of each image position, -1 elsewhere; None = 0

    def frame_ids(self) -> "torch.Tensor":
        """LongTensor[B, T]: the frame index of every image position (-1 at every other position)."""
        import torch

        if self.frames is not None:
            return self.frames
        return torch.where(self.ids == IMAGE, 0, -1)

    def with_frames(self, frames: "torch.Tensor") -> "TokenRoles":
        """These roles with ``frames`` (LongTensor[B, T]); VlmflowError unless it is >= 0 exactly at image positions."""
        import torch

        frames = torch.as_tensor(frames, dtype=torch.long)
        if tuple(frames.shape) != tuple(self.ids.shape):
            raise VlmflowError(f"frames of shape {tuple(frames.shape)} for roles of shape {tuple(self.ids.shape)}")
        if not torch.equal(frames >= 0, self.ids == IMAGE):
            raise VlmflowError("frames must give a frame index (>= 0) at every image position and -1 elsewhere")
        return TokenRoles(self.ids, self.prompt_length, frames)

    @staticmethod
    def resolve(names: str | Iterable[str]) -> frozenset[str]:
        return resolve(names)

    @property
    def batch_size(self) -> int:
        return int(self.ids.shape[0])

    def extended(self, length: int | None = None) -> "torch.Tensor":
        """Role ids LongTensor[B, length]: the prompt's ids, then ``generated`` beyond the prompt."""
        import torch

        length = self.prompt_length if length is None else int(length)
        if length <= self.prompt_length:
            return self.ids[:, :length]
        extra = torch.full((self.batch_size, length - self.prompt_length), GENERATED, dtype=self.ids.dtype,
                           device=self.ids.device)
        return torch.cat([self.ids, extra], dim=1)

    def mask(self, names: str | Iterable[str], length: int | None = None) -> "torch.Tensor":
        """BoolTensor[B, length]: True where the position's role is in ``names`` (roles and/or groups)."""
        import torch

        table = torch.tensor(role_id_mask(names), device=self.ids.device)
        return table[self.extended(length)]

    def positions(self, name: str | Iterable[str], row: int = 0) -> "torch.Tensor":
        """LongTensor[n]: prompt positions of ``row`` whose role is in ``name`` (generated positions excluded)."""
        return self.mask(name)[row].nonzero().flatten()

    def count(self, name: str | Iterable[str], row: int = 0) -> int:
        return int(self.mask(name)[row].sum())

    def select(self, rows: Sequence[int]) -> "TokenRoles":
        """The roles of a subset of batch rows (padding columns that every kept row has are kept)."""
        frames = None if self.frames is None else self.frames[list(rows)]
        return TokenRoles(self.ids[list(rows)], self.prompt_length, frames)

    def names(self, row: int = 0) -> list[str]:
        """The role name of every prompt position of ``row`` (for display and debugging)."""
        return [ROLES[i] for i in self.ids[row].tolist()]

    def __repr__(self) -> str:
        return f"TokenRoles(batch={self.batch_size}, prompt_length={self.prompt_length})"


def segment_token_roles(tokenizer, segments: Sequence[tuple[str, str]], *, add_special_tokens: bool = True
                        ) -> tuple[list[int], list[int]]:
    """Tokenize the unexpanded prompt and give each token the role of the segment holding its first character.

    Returns (token ids, role ids). A special token with empty offsets at the start that equals ``bos_token_id`` is
    ``bos``; any other token with empty offsets takes the role of the token before it (or after it, at the start).
    ``add_special_tokens=False`` labels text appended after a prompt (re-prompting's question turn) without a BOS.
    """
    text = "".join(t for _, t in segments)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
    ids: list[int] = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    # segment index of every character
    bounds: list[tuple[int, int, str]] = []
    pos = 0
    for role, seg in segments:
        if role not in ROLE_ID or role in ("pad", "generated"):
            raise UnknownRoleError(f"segment role {role!r} is not a prompt role; use one of {', '.join(ROLES[1:-1])}")
        bounds.append((pos, pos + len(seg), role))
        pos += len(seg)

    def role_at(char: int) -> int:
        for lo, hi, role in bounds:
            if lo <= char < hi:
                return ROLE_ID[role]
        raise RoleAlignmentError(f"character {char} of the prompt {text!r} lies in no segment")

    roles: list[int | None] = []
    bos_id = getattr(tokenizer, "bos_token_id", None)
    for i, (tok, (lo, hi)) in enumerate(zip(ids, offsets)):
        if hi > lo:
            # skip leading whitespace inside a token's span (sentencepiece "▁word" starts at the space before it)
            first = lo
            while first < hi - 1 and text[first].isspace():
                first += 1
            roles.append(role_at(first))
        elif i == 0 and bos_id is not None and tok == bos_id:
            roles.append(BOS)
        else:
            roles.append(None)
    for i in range(len(roles)):  # empty-offset tokens inherit a neighbour's role
        if roles[i] is None:
            roles[i] = roles[i - 1] if i > 0 else next((r for r in roles if r is not None), SYSTEM)
    return ids, roles  # type: ignore[return-value]


def roles_from_segments(
    tokenizer,
    segments_per_row: Sequence[Sequence[tuple[str, str]]],
    input_ids: "torch.Tensor",
    attention_mask: "torch.Tensor",
    image_token_id: int,
) -> TokenRoles:
    """Label the processor's output (input_ids LongTensor[B, T], left-padded) with roles.

    Per row: tokenize the unexpanded prompt (the segments joined, one ``image`` segment holding the placeholder) with
    offsets to get (token, role) pairs; the processor's row must then read identical prefix (tokens before the image
    segment) + an expanded image block + identical suffix. Inside the block, ``image_token_id`` positions are ``image``
    and any other token (``<img>``, ``<|vision_start|>`` markers) is ``user``. Pads come from attention_mask.
    """
    import torch

    B, T = input_ids.shape
    out = torch.full((B, T), PAD, dtype=torch.long)
    for b in range(B):
        valid = attention_mask[b].bool()
        n_pad = int((~valid).sum())
        if n_pad and bool(valid[:n_pad].any()):
            raise RoleAlignmentError(f"row {b}: padding is not on the left (set tokenizer.padding_side='left')")
        row = input_ids[b, n_pad:].tolist()
        seg_ids, seg_roles = segment_token_roles(tokenizer, segments_per_row[b])
        img = [i for i, r in enumerate(seg_roles) if r == IMAGE]
        if not img:
            raise NoImageTokensError(
                f"row {b}: the prompt has no image segment tokens; segments were {list(segments_per_row[b])!r}"
            )
        k0, k1 = img[0], img[-1] + 1
        if img != list(range(k0, k1)):
            raise RoleAlignmentError(f"row {b}: the image segment is not contiguous in the tokenized prompt")
        prefix, suffix = seg_ids[:k0], seg_ids[k1:]
        n_block = len(row) - len(prefix) - len(suffix)
        if row[:k0] != prefix or (suffix and row[len(row) - len(suffix):] != suffix) or n_block <= 0:
            raise RoleAlignmentError(
                f"row {b}: the processor's input_ids do not read <prompt prefix> <image block> <prompt suffix> "
                f"for segments {list(segments_per_row[b])!r}; prefix ids {prefix[:12]}..., got {row[:12]}..."
            )
        block = torch.tensor(row[k0:k0 + n_block])
        is_img = block == image_token_id
        if not bool(is_img.any()):
            raise NoImageTokensError(
                f"row {b}: no image tokens (id {image_token_id}) in the processor's output: pass an image, and keep "
                f"the adapter's image placeholder in the prompt"
            )
        labels = torch.tensor(seg_roles[:k0] + [USER] * n_block + seg_roles[k1:], dtype=torch.long)
        labels[k0:k0 + n_block][is_img] = IMAGE
        out[b, n_pad:] = labels
    return TokenRoles(out, T)
