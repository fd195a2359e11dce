"""Attention recording specs and results.

``Record(rows=("last_prompt", "generated"), layers=None, heads="mean")`` (the default) asks ``vlmflow.attention`` to compute, inside the same
attention function that does knockouts, the softmax attention rows of the selected query positions only, and to
reduce them at once to (a) the attention mass on each role and (b) the attention map over the image tokens. Memory
grows with rows x layers x keys; a full heads x sequence x sequence tensor is never built. Recording works under a
knockout (the recorded rows are the knocked-out attention).

Rows:
  a role or group name, or a list of them: every position with that role, in every forward that computes it
  (``"generated"``: tokens fed back during decoding, i.e. positions prompt_length.. ; ``"query"``: the prompt's
  question tokens, recorded in the prefill);
  ``"last_prompt"``: the last prompt position, which predicts the first generated token.
  ``["last_prompt", "generated"]`` (the default) = every position that predicts an output token (the rows of the
  paper's attention-by-role figure, and the rows ``Generation.heatmap`` reads).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vlmflow.errors import LayerIndexError, UnknownRoleError, VlmflowError
from vlmflow.roles import ROLES, resolve

if TYPE_CHECKING:
    import torch

LAST_PROMPT = "last_prompt"


@dataclass(frozen=True)
class Record:
    """What to record: ``rows`` (see module docstring), ``layers`` (None = all), ``heads`` ("mean" or "all");
    ``store_rows=True`` also keeps each head-averaged attention row over all keys (``AttentionRecord.attention``)."""

    rows: str | tuple[str, ...] = (LAST_PROMPT, "generated")
    layers: tuple[int, ...] | None = None
    heads: str = "mean"
    store_rows: bool = False

    def __post_init__(self):
        rows = (self.rows,) if isinstance(self.rows, str) else tuple(self.rows)
        if not rows:
            raise UnknownRoleError("Record rows is empty: name a role, a group or 'last_prompt'")
        for r in rows:
            if r != LAST_PROMPT:
                resolve(r)
        object.__setattr__(self, "rows", rows[0] if len(rows) == 1 else tuple(sorted(set(rows))))
        if self.layers is not None:
            layers = (self.layers,) if isinstance(self.layers, int) else tuple(int(i) for i in self.layers)
            if any(i < 0 for i in layers):
                raise LayerIndexError(f"Record layers {layers} include a negative index; layers are indexed from 0")
            object.__setattr__(self, "layers", tuple(sorted(set(layers))))
        if self.heads not in ("mean", "all"):
            raise VlmflowError(f"Record heads must be 'mean' or 'all', got {self.heads!r}")

    @property
    def row_names(self) -> tuple[str, ...]:
        return (self.rows,) if isinstance(self.rows, str) else self.rows

    @property
    def row_roles(self) -> frozenset[str]:
        """The roles whose positions are recorded (``last_prompt`` handled separately)."""
        names = [r for r in self.row_names if r != LAST_PROMPT]
        return resolve(names) if names else frozenset()

    @property
    def last_prompt(self) -> bool:
        return LAST_PROMPT in self.row_names

    def layer_indices(self, n_layers: int) -> tuple[int, ...]:
        from vlmflow.knockout import concrete_layers

        return concrete_layers(self.layers, n_layers, "Record")


@dataclass
class AttentionRecord:
    """Recorded attention of one sample (positions are in the sample's own, unpadded coordinates).

    layers:         tuple[int] of length L, the recorded decoder layers
    row_positions:  LongTensor[R], the recorded query positions, ascending
    row_token_ids:  LongTensor[R], the token id at each recorded position (-1 where unknown)
    role_mass:      Tensor[R, L, n_roles] (n_roles = len(ROLES)), head-averaged attention mass on each role's keys;
                    sums to 1 over roles
    key_share:      Tensor[R, n_roles], share of each role among the keys the row can see (causal, no padding): the
                    uniform-attention baseline
    image_map:      Tensor[R, L, N_img] head-averaged attention on each image token (sequence order, see
                    ``Adapter.geometry``), or Tensor[R, L, H, N_img] with ``heads="all"``
    image_positions: LongTensor[N_img], positions of the image tokens
    attention:      Tensor[R, L, T] head-averaged attention over every key position (0 beyond a row's own length),
                    only with ``Record(store_rows=True)``, else None
    """

    layers: tuple[int, ...]
    row_positions: "torch.Tensor"
    row_token_ids: "torch.Tensor"
    role_mass: "torch.Tensor"
    key_share: "torch.Tensor"
    image_map: "torch.Tensor"
    image_positions: "torch.Tensor"
    heads: str = "mean"
    attention: "torch.Tensor | None" = None
    roles: tuple[str, ...] = field(default=ROLES)

    def mass(self, names: str | Iterable[str]) -> "torch.Tensor":
        """Tensor[R, L]: attention mass on the union of the named roles/groups."""
        chosen = resolve(names)
        idx = [i for i, r in enumerate(self.roles) if r in chosen]
        return self.role_mass[..., idx].sum(-1)

    def layer(self, layer: int) -> int:
        """Index of decoder layer ``layer`` in the recorded axis."""
        try:
            return self.layers.index(layer)
        except ValueError:
            raise LayerIndexError(f"layer {layer} was not recorded; recorded layers: {list(self.layers)}") from None

    def __repr__(self) -> str:
        return (f"AttentionRecord(rows={len(self.row_positions)}, layers={len(self.layers)}, "
                f"image_tokens={len(self.image_positions)}, heads={self.heads!r})")
