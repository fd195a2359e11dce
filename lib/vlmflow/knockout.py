"""Attention knockout specs: which positions (target rows) may not read which positions (source columns), in which
decoder layers.

``Knockout(source="image", target="generated", layers=range(0, 16))`` blocks, in layers 0-15, every attention score
from a generated position (query row) to an image position (key column): the pre-softmax score becomes the dtype's
minimum, the causal and padding masks still apply (the paper's attention knockout). Several specs apply together (union of
blocked pairs). ``vlmflow.attention`` compiles the specs of every batch row into a per-row, per-layer role-pair table;
``vlmflow.model.VLM.generate`` accepts one spec, a list (applied together) or a per-row list of lists.

Note on KO image->generated: the *first* generated token is predicted by the last prompt position, which is not a
generated position, so its logits are unaffected; only tokens after it lose the image (as in the official code).

Layer sets (L = number of decoder layers, layers indexed 0..L-1):
  ``from_layer(l)``      layers l+1..L-1 are knocked out (the official code masks layers with index > l):
                         l = -1 masks all layers, l = L-1 (or L) masks none.
  ``upto_layer(l)``      layers 0..l (inclusive) are knocked out: the complement of ``from_layer(l)``.
  ``outside_window(a, b)`` every layer outside [a, b] is knocked out: the source is visible only in a..b (inclusive).
String form (CLI): ``SOURCE[POSITIONS]:TARGET[@LAYERS]``, names joined with ``+`` (``image:query+generated``),
LAYERS like ``0-3``, ``5``, ``0-3,7`` or ``all``; the optional ``[POSITIONS]`` uses the same range syntax.

Position-level knockouts (the paper's top-K experiment): ``source_positions`` restricts the blocked source columns to
the given prompt positions (0-based indices into the row's own, unpadded prompt, as ``TokenRoles.positions(name,
row)`` gives them for an unpadded row) that also carry a source role: ``Knockout("image", ("text", "generated"),
source_positions=hidden)`` hides only the image tokens listed in ``hidden``. ``None`` (the default) = every position of
the source roles (the role-only fast path); ``()`` = no position, so the spec blocks nothing. Positions past the prompt
cannot be named (generated positions differ per configuration). A bool mask over the prompt is accepted as well and
stored as indices. ``spec_id`` writes the set in range form, e.g. ``image[5-9,12]:generated@all``.

Frame-level knockouts (video): ``source_frames`` restricts the blocked source columns to the positions whose frame
index (``TokenRoles.frame_ids``: the frame an image or video token shows; -1 for text) is listed:
``Knockout("image", "generated", source_frames=[0])`` hides the first frame of a clip from the generated tokens.
It combines with ``source_positions`` (both must hold). A prompt with one image is frame 0. Naming a frame the
prompt does not have is a PositionError. String form ``image{0}:generated``, ``image{0-1,3}:generated@0-3``.
Like position knockouts, frame knockouts compile to position terms of the one registered attention function.
"""
from __future__ import annotations

import numbers
import re
from collections.abc import Iterable
from dataclasses import dataclass

from vlmflow.errors import LayerIndexError, UnknownRoleError, VlmflowError
from vlmflow.roles import IMAGE, resolve, role_id_mask

Names = str | tuple[str, ...]


class KnockoutError(VlmflowError, ValueError):
    """A knockout that cannot be applied meaningfully, e.g. one that leaves a position with no key to attend to."""


class PositionError(VlmflowError, ValueError):
    """A knockout's source positions are malformed or lie outside the prompt they are applied to."""


def _names(value, what: str) -> Names:
    if isinstance(value, str):
        names: tuple[str, ...] = tuple(n.strip() for n in value.split("+")) if "+" in value else (value,)
    else:
        try:
            names = tuple(value)
        except TypeError:
            raise UnknownRoleError(
                f"knockout {what} must be a role/group name or a list of them, got {value!r}") from None
    if not names:
        raise UnknownRoleError(f"knockout {what} is empty: name at least one role or group")
    for n in names:
        resolve(n)  # raises UnknownRoleError naming the bad name
    names = tuple(sorted(set(names)))
    return names[0] if len(names) == 1 else names


def _layers(value) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, int):
        value = (value,)
    out = set()
    for i in value:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):  # numpy ints are fine, floats are not
            raise LayerIndexError(f"knockout layer {i!r} is not an integer")
        if int(i) < 0:
            raise LayerIndexError(f"knockout layer {int(i)} is negative; layers are indexed from 0")
        out.add(int(i))
    return tuple(sorted(out))


def _positions(value) -> tuple[int, ...] | None:
    """Indices or a bool mask over the prompt -> sorted unique indices (None stays None: every position)."""
    if value is None:
        return None
    import numpy as np

    arr = np.asarray(value.cpu() if hasattr(value, "cpu") else value)
    if arr.dtype == bool:
        if arr.ndim != 1:
            raise PositionError(f"knockout source_positions: a bool mask must be 1-D over the prompt, got shape "
                                f"{arr.shape}")
        return tuple(int(i) for i in np.flatnonzero(arr))
    arr = arr.reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise PositionError(f"knockout source_positions must be integer indices or a bool mask, got dtype {arr.dtype}")
    if arr.size and int(arr.min()) < 0:
        raise PositionError(f"knockout source position {int(arr.min())} is negative; positions index the prompt from 0")
    return tuple(sorted({int(i) for i in arr}))


def _frames(value) -> tuple[int, ...] | None:
    """Frame indices -> sorted unique non-negative ints (None stays None: every frame)."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral):
        value = (value,)
    out = set()
    for i in value:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise PositionError(f"knockout source frame {i!r} is not an integer")
        if int(i) < 0:
            raise PositionError(f"knockout source frame {int(i)} is negative; frames are indexed from 0")
        out.add(int(i))
    return tuple(sorted(out))


def concrete_layers(layers: tuple[int, ...] | None, n_layers: int, owner: str) -> tuple[int, ...]:
    """``layers`` (None = all) for a model with ``n_layers`` decoder layers; LayerIndexError naming ``owner`` and the
    first layer out of range. Shared by Knockout and Record."""
    if layers is None:
        return tuple(range(n_layers))
    bad = [i for i in layers if i >= n_layers]
    if bad:
        raise LayerIndexError(f"{owner}: layer {bad[0]} is out of range; the model has {n_layers} decoder layers "
                              f"(valid 0-{n_layers - 1})")
    return tuple(layers)


def format_layers(layers: tuple[int, ...] | None) -> str:
    """(0, 1, 2, 3, 7) -> "0-3,7"; None -> "all"; () -> "none"."""
    if layers is None:
        return "all"
    if not layers:
        return "none"
    parts, start, prev = [], layers[0], layers[0]
    for i in layers[1:] + (None,):
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


def parse_layers(text: str) -> tuple[int, ...] | None:
    """"0-3,7" -> (0, 1, 2, 3, 7); "all" -> None; "none" -> ()."""
    text = text.strip()
    if text == "all":
        return None
    if text == "none":
        return ()
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise LayerIndexError(f"cannot parse layer set {text!r}: expected e.g. 0-3, 5, 0-3,7 or all")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise LayerIndexError(f"layer range {part.strip()!r} runs backwards")
        out.extend(range(a, b + 1))
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class Knockout:
    """Block attention from ``target`` rows to ``source`` columns in ``layers`` (None = every layer); with
    ``source_positions``, only the source columns at those prompt positions (see the module docstring)."""

    source: Names
    target: Names
    layers: tuple[int, ...] | None = None
    source_positions: tuple[int, ...] | None = None
    source_frames: tuple[int, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "source", _names(self.source, "source"))
        object.__setattr__(self, "target", _names(self.target, "target"))
        object.__setattr__(self, "layers", _layers(self.layers))
        object.__setattr__(self, "source_positions", _positions(self.source_positions))
        object.__setattr__(self, "source_frames", _frames(self.source_frames))

    @property
    def by_position(self) -> bool:
        """Whether the spec blocks chosen positions (``source_positions`` or ``source_frames``) rather than whole
        roles: such a spec compiles to position terms (``vlmflow.attention.compile_knockouts``)."""
        return self.source_positions is not None or self.source_frames is not None

    def source_columns(self, role_ids, frames=None) -> list[bool]:
        """Which positions of one unpadded prompt (``role_ids``: a role id per position) are blocked source
        columns: source role, in ``source_positions`` and showing one of ``source_frames`` when given (``frames``:
        the frame index per position, -1 off images; None = every image position is frame 0). PositionError if a
        position is past the prompt or a frame is not in it."""
        src = role_id_mask(self.source)
        cols = [bool(src[int(r)]) for r in role_ids]
        if self.source_frames is not None:
            if frames is None:
                frames = [0 if int(r) == IMAGE else -1 for r in role_ids]
            frames = [int(f) for f in frames]
            have = sorted({f for f in frames if f >= 0})
            missing = [f for f in self.source_frames if f not in have]
            if missing:
                shown = format_layers(tuple(have)) if have else "none"
                raise PositionError(f"knockout {self.spec_id}: source frame {missing[0]} is not in the prompt "
                                    f"(its frames: {shown})")
            cols = [c and f in self.source_frames for c, f in zip(cols, frames)]
        if self.source_positions is None:
            return cols
        P = len(cols)
        if self.source_positions and self.source_positions[-1] >= P:
            raise PositionError(f"knockout {self.spec_id}: source position {self.source_positions[-1]} is past the "
                                f"{P}-token prompt (positions index the unpadded prompt from 0)")
        keep = [False] * P
        for i in self.source_positions:
            keep[i] = cols[i]
        return keep

    # ---- resolution ---------------------------------------------------------------------------------------
    @property
    def source_roles(self) -> frozenset[str]:
        return resolve(self.source)

    @property
    def target_roles(self) -> frozenset[str]:
        return resolve(self.target)

    def layer_indices(self, n_layers: int) -> tuple[int, ...]:
        """The concrete layers for a model with ``n_layers`` decoder layers; LayerIndexError if one is out of range."""
        return concrete_layers(self.layers, n_layers, f"knockout {self.spec_id}")

    # ---- layer-set constructors (see the module docstring for the conventions) ----------------------------
    @classmethod
    def from_layer(cls, source, target, layer: int, n_layers: int) -> "Knockout":
        """Knock out layers with index > ``layer`` (official code); -1 = all layers, n_layers - 1 = none."""
        if not -1 <= layer <= n_layers:
            raise LayerIndexError(f"from_layer: layer {layer} out of range -1..{n_layers} for {n_layers} layers")
        return cls(source, target, tuple(range(layer + 1, n_layers)))

    @classmethod
    def upto_layer(cls, source, target, layer: int, n_layers: int) -> "Knockout":
        """Knock out layers 0..``layer`` inclusive (the complement of ``from_layer``); -1 = none."""
        if not -1 <= layer < n_layers:
            raise LayerIndexError(f"upto_layer: layer {layer} out of range -1..{n_layers - 1} for {n_layers} layers")
        return cls(source, target, tuple(range(0, layer + 1)))

    @classmethod
    def outside_window(cls, source, target, first: int, last: int, n_layers: int) -> "Knockout":
        """Knock out every layer outside [first, last]: the source stays visible only inside the window."""
        if not (0 <= first <= last < n_layers):
            raise LayerIndexError(
                f"outside_window: window [{first}, {last}] must satisfy 0 <= first <= last < {n_layers}"
            )
        return cls(source, target, tuple(i for i in range(n_layers) if not first <= i <= last))

    @classmethod
    def parse(cls, text: str) -> "Knockout":
        """``"image:generated@0-3"`` -> Knockout("image", "generated", (0, 1, 2, 3)); no ``@`` = all layers;
        ``"image[5-9]:generated"`` restricts the source to prompt positions 5..9, ``"image{0}:generated"`` to
        frame 0."""
        spec, at, layers = text.strip().partition("@")
        if at and not layers.strip():
            raise LayerIndexError(f"knockout {text!r} ends in '@' without layers: write e.g. @0-3, @5 or @all, or "
                                  f"drop the '@' for every layer")
        if spec.count(":") != 1:
            raise UnknownRoleError(f"cannot parse knockout {text!r}: expected SOURCE[POSITIONS]:TARGET[@LAYERS], "
                                   f"e.g. image:generated@0-3")
        source, target = spec.split(":")
        positions = frames = None
        f = re.fullmatch(r"\s*([^{}]+?)\s*\{([^}]*)\}\s*", source)
        if f:
            source, where = f.group(1), f.group(2)
            try:
                frames = parse_layers(where)
            except LayerIndexError:
                raise PositionError(f"cannot parse source frames {{{where}}} in knockout {text!r}: expected e.g. "
                                    f"{{0}} or {{0-1,3}}") from None
        m = re.fullmatch(r"\s*([^\[\]]+?)\s*\[([^\]]*)\]\s*", source)
        if m:
            source, where = m.group(1), m.group(2)
            if where.strip() == "all":
                raise PositionError(f"knockout {text!r}: write no [POSITIONS] for every position, not [all]")
            try:
                positions = parse_layers(where)
            except LayerIndexError:
                raise PositionError(f"cannot parse source positions [{where}] in knockout {text!r}: expected e.g. "
                                    f"[5-9,12] or [none]") from None
        return cls(source.strip(), target.strip(), parse_layers(layers) if layers else None, positions, frames)

    # ---- identity --------------------------------------------------------------------------------------------
    @property
    def spec_id(self) -> str:
        """Stable string key, e.g. ``image:generated@0-3`` or ``image[5-9]:generated@all``; parses back to an equal
        Knockout."""
        src = self.source if isinstance(self.source, str) else "+".join(self.source)
        if self.source_positions is not None:
            src += f"[{format_layers(self.source_positions)}]"
        if self.source_frames is not None:
            src += f"{{{format_layers(self.source_frames)}}}"
        tgt = self.target if isinstance(self.target, str) else "+".join(self.target)
        return f"{src}:{tgt}@{format_layers(self.layers)}"

    def __str__(self) -> str:
        return self.spec_id


def spec_id(knockouts: "Knockout | Iterable[Knockout] | None") -> str:
    """Stable key of a set of specs applied together ("none" for no knockout)."""
    if knockouts is None:
        return "none"
    if isinstance(knockouts, Knockout):
        return knockouts.spec_id
    ids = sorted({k.spec_id for k in knockouts})
    return " & ".join(ids) if ids else "none"
