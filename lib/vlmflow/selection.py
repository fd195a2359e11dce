"""Ranking image tokens and keeping the top K%: the one ranking shared by image re-prompting and top-K knockouts.

Used by ``vlmflow.reprompt`` (which image tokens' KV to keep in a compressed context) and by the sweep engine's
``topk`` preset (``vlmflow.presets``; which image tokens stay visible to the description, the others knocked out with
position-level ``Knockout(..., source_positions=...)``). Both rank from the same "describe the image" baseline run.

Rules (``by=``):
  ``"attention"``  per layer, the mean (head-averaged) attention each image token received, in that same layer, from
                   the rows that predicted the description's tokens (the last prompt position and every generated
                   position but the last; ``Record(rows=("last_prompt", "generated"))``, averaged over rows): each
                   layer its own set, as in the official code;
  ``"band"``       that attention averaged over a band of layers (default :func:`middle_band`: [L/4, L/2), the
                   paper's layers 20-40 of 80), one set used in every layer (the paper's wording);
  ``"norm"``       per layer, the L2 norm of the image token's hidden state at that layer's input;
  ``"random"``     a seeded random order, drawn independently per layer (``torch.Generator().manual_seed(seed)``).
Ties keep sequence order (stable sort), so every ranking is deterministic. K% of N image tokens keeps
``ceil(K/100 * N)`` (:func:`n_keep`: K = 1% of 64 keeps 1; K = 0 keeps none).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vlmflow.errors import VlmflowError

if TYPE_CHECKING:
    import torch

    from vlmflow.knockout import Knockout

SELECTIONS = ("attention", "band", "norm", "random")


class SelectionError(VlmflowError, ValueError):
    """An image-token selection cannot be made as asked (unknown rule, missing scores, bad K or band)."""


def middle_band(n_layers: int) -> range:
    """Layers [L/4, L/2): 20-39 of 80 (the paper's InternVL2 window), 8-15 of 32, 2-3 of 8."""
    return range(n_layers // 4, max(n_layers // 2, n_layers // 4 + 1))


def n_keep(k_percent: float, n_image: int) -> int:
    """How many of ``n_image`` tokens the top ``k_percent`` % keeps: ceil(K/100 * N), at most N."""
    if not 0 <= k_percent <= 100:
        raise SelectionError(f"K must be a percentage in [0, 100], got {k_percent}")
    return min(n_image, math.ceil(k_percent / 100 * n_image - 1e-9))


def rank_image_tokens(by: str, n_layers: int, n_image: int, *, attention: "torch.Tensor | None" = None,
                      norms: "torch.Tensor | None" = None, band: Sequence[int] | None = None,
                      seed: int = 0) -> "torch.Tensor":
    """LongTensor[L, N]: per decoder layer, image-token indices (into the image span) from most to least chosen.

    attention: Tensor[L, N] mean attention per layer (rules ``attention`` / ``band``); norms: Tensor[L, N] hidden-state
    norms at each layer's input (rule ``norm``)."""
    import torch

    L, N = int(n_layers), int(n_image)
    if by in ("attention", "band"):
        if attention is None:
            raise SelectionError(f"selection {by!r} needs the baseline's recorded attention to the image tokens")
        score = attention.float()
        if tuple(score.shape) != (L, N):
            raise SelectionError(f"attention scores have shape {tuple(score.shape)}, expected (layers, image tokens) = "
                                 f"({L}, {N})")
        if by == "band":
            layers = list(band if band is not None else middle_band(L))
            if not layers or min(layers) < 0 or max(layers) >= L:
                raise SelectionError(f"band {layers} is not within the model's layers 0-{L - 1}")
            score = score[layers].mean(0, keepdim=True).expand(L, N)
    elif by == "norm":
        if norms is None:
            raise SelectionError("selection 'norm' needs the image tokens' hidden-state norms per layer")
        score = norms.float()
        if tuple(score.shape) != (L, N):
            raise SelectionError(f"hidden-state norms have shape {tuple(score.shape)}, expected ({L}, {N})")
    elif by == "random":
        g = torch.Generator().manual_seed(int(seed))
        return torch.stack([torch.randperm(N, generator=g) for _ in range(L)]) if L else torch.zeros(0, N).long()
    else:
        raise SelectionError(f"unknown selection {by!r}; use one of {', '.join(SELECTIONS)}")
    return torch.sort(score, dim=1, descending=True, stable=True).indices


@dataclass(frozen=True)
class ImageSelection:
    """Keep the top ``k_percent`` % of the image tokens ranked ``by`` a rule (see the module docstring).

    In a sweep (``SweepConfig(knockouts, keep=ImageSelection(5, "attention"))``) each knockout of the configuration
    then blocks only the image tokens OUTSIDE the kept set (per layer)."""

    k_percent: float
    by: str = "attention"
    seed: int = 0
    band: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.by not in SELECTIONS:
            raise SelectionError(f"unknown selection {self.by!r}; use one of {', '.join(SELECTIONS)}")
        n_keep(self.k_percent, 0)  # validates K
        object.__setattr__(self, "k_percent", float(self.k_percent))
        object.__setattr__(self, "seed", int(self.seed))
        if self.band is not None:
            object.__setattr__(self, "band", tuple(sorted({int(i) for i in self.band})))

    @property
    def spec_id(self) -> str:
        """``top5%:attention``, ``top5%:band(2-3)``, ``top5%:random(seed=0)``: stable and image-independent."""
        from vlmflow.knockout import format_layers

        k = f"{self.k_percent:g}"
        if self.by == "random":
            return f"top{k}%:random(seed={self.seed})"
        if self.by == "band" and self.band is not None:
            return f"top{k}%:band({format_layers(self.band)})"
        return f"top{k}%:{self.by}"

    def ranking(self, n_layers: int, n_image: int, *, attention=None, norms=None) -> "torch.Tensor":
        return rank_image_tokens(self.by, n_layers, n_image, attention=attention, norms=norms, band=self.band,
                                 seed=self.seed)

    def hide(self, template: "Knockout", ranking: "torch.Tensor", image_positions: Sequence[int],
             n_layers: int) -> "tuple[Knockout, ...]":
        """``template`` restricted, in each of its layers, to the image tokens outside this selection's top K%.

        ranking: LongTensor[L, N] (``ranking()``); image_positions: the N image positions in the prompt (unpadded).
        Layers that hide the same set share one Knockout; K = 100% gives an empty position set (blocks nothing)."""
        from vlmflow.knockout import Knockout

        N = len(image_positions)
        k = n_keep(self.k_percent, N)
        pos = list(image_positions)
        ranks = ranking.tolist()  # plain ints: no per-element tensor indexing
        by_set: dict[tuple[int, ...], list[int]] = {}
        for layer in template.layer_indices(n_layers):
            hidden = tuple(sorted(pos[i] for i in ranks[layer][k:]))
            by_set.setdefault(hidden, []).append(layer)
        return tuple(Knockout(template.source, template.target, layers, source_positions=hidden)
                     for hidden, layers in by_set.items())


__all__ = ["ImageSelection", "SELECTIONS", "SelectionError", "middle_band", "n_keep", "rank_image_tokens"]
