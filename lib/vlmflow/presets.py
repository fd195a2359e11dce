"""Named sets of sweep configurations (the paper's experiments), built from the model's decoder layer count.

``preset(name, n_layers, force_prefix=0, record=BASELINE_RECORD) -> list[SweepConfig]``; every config carries tidy
labels (``family``, ``ko_type``, ``layer`` / ``window_start`` / ``window_end``...) that become table columns in the
store (``vlmflow.store``), and a stable ``spec_id`` (``vlmflow.knockout``'s string form) that keys the results.

  from-layer   baseline + each knockout type (KO_TYPES) in layers l+1..L-1, for l = -1 (all layers) .. L-2
               (the official code's convention, ``Knockout.from_layer``)
  upto-layer   baseline + each knockout type in layers 0..l, for l = 0 .. L-1 (``Knockout.upto_layer``)
  window       baseline + the image visible to text and generated tokens only inside [a, b] (``outside_window``),
               sliding a (stride ``max(1, L // 16)``) for widths of 25% and 50% of the layers (at least 1 layer):
               the paper's middle-layer experiment
  topk         baseline + the image tokens OUTSIDE the top K% hidden from the text and generated tokens in every layer
               (KO img->txt+gen restricted by position), for K in TOPK_PERCENTS, the tokens ranked per image by
               ``vlmflow.selection`` (the same ranking as image re-prompting): ``attention`` (per layer, the
               baseline's attention from the rows that predicted its tokens; each layer its own set), ``band`` (that
               attention averaged over the middle band [L/4, L/2), one set for all layers), ``norm`` (per layer,
               hidden-state norm) and ``random`` (seed 0, per layer)
The baseline records attention (``BASELINE_RECORD``: every position that predicts an output token) so figures of
attention by role come from the same sweep. ``force_prefix=k > 0`` adds, next to each knockout config, its variant
with the first k generated tokens forced to the baseline's (the first-token control); both carry ``forced`` labels.
"""
from __future__ import annotations

from vlmflow.errors import VlmflowError
from vlmflow.knockout import Knockout
from vlmflow.record import Record
from vlmflow.selection import ImageSelection
from vlmflow.sweep import SELECTION_RECORD, SweepConfig

# (label, knockout target) of the paper's three knockout types; the source is always the image.
KO_TYPES: tuple[tuple[str, object], ...] = (
    ("img->gen", "generated"),
    ("img->txt", "text"),
    ("img->txt+gen", ("text", "generated")),
)
BASELINE_RECORD = SELECTION_RECORD  # Record(rows=("last_prompt", "generated")): also what top-K ranks by
TOPK_PERCENTS = (1, 2, 5, 10, 20, 50)
TOPK_SELECTIONS = ("attention", "band", "norm", "random")


class UnknownPresetError(VlmflowError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _baseline(record: Record | None) -> SweepConfig:
    return SweepConfig(record=record, labels=(("family", "baseline"), ("ko_type", "none")))


def from_layer(n_layers: int) -> list[SweepConfig]:
    out = []
    for ko_type, target in KO_TYPES:
        for layer in range(-1, n_layers - 1):
            out.append(SweepConfig((Knockout.from_layer("image", target, layer, n_layers),),
                                   labels=(("family", "from-layer"), ("ko_type", ko_type), ("layer", layer))))
    return out


def upto_layer(n_layers: int) -> list[SweepConfig]:
    out = []
    for ko_type, target in KO_TYPES:
        for layer in range(0, n_layers):
            out.append(SweepConfig((Knockout.upto_layer("image", target, layer, n_layers),),
                                   labels=(("family", "upto-layer"), ("ko_type", ko_type), ("layer", layer))))
    return out


def window_widths(n_layers: int) -> list[int]:
    return sorted({max(1, round(n_layers * f)) for f in (0.25, 0.5)})


def window(n_layers: int) -> list[SweepConfig]:
    stride = max(1, n_layers // 16)
    out = []
    for width in window_widths(n_layers):
        starts = list(range(0, n_layers - width + 1, stride))
        if starts[-1] != n_layers - width:
            starts.append(n_layers - width)  # the last window always ends at the last layer
        for a in starts:
            b = a + width - 1
            ko = Knockout.outside_window("image", ("text", "generated"), a, b, n_layers)
            if not ko.layers:
                continue  # the window covers every layer: that is the baseline
            out.append(SweepConfig((ko,), labels=(("family", "window"), ("ko_type", "img->txt+gen"),
                                                  ("window_start", a), ("window_end", b), ("width", width))))
    return out


def topk(n_layers: int, percents=TOPK_PERCENTS, selections=TOPK_SELECTIONS) -> list[SweepConfig]:
    """The top-K configurations for each of ``selections`` and K in ``percents`` (a notebook may ask for a subset;
    an unknown rule or K is refused by ``ImageSelection``)."""
    out = []
    for by in selections:
        for k in percents:
            out.append(SweepConfig((Knockout("image", ("text", "generated")),), keep=ImageSelection(k, by),
                                   labels=(("family", "topk"), ("ko_type", "img->txt+gen"), ("k_percent", float(k)),
                                           ("select", by))))
    return out


PRESETS = {"from-layer": from_layer, "upto-layer": upto_layer, "window": window, "topk": topk}


def preset(name: str, n_layers: int, *, force_prefix: int = 0,
           record: Record | None = BASELINE_RECORD) -> list[SweepConfig]:
    """The configurations of preset ``name`` for a model with ``n_layers`` decoder layers (baseline first)."""
    if name not in PRESETS:
        raise UnknownPresetError(f"unknown sweep preset {name!r}; presets: {', '.join(PRESETS)}")
    if n_layers < 1:
        raise VlmflowError(f"preset {name}: the model must have at least one decoder layer, got {n_layers}")
    configs = [_baseline(record)] + PRESETS[name](n_layers)
    if force_prefix:
        forced = [SweepConfig(c.knockouts, None, force_prefix, c.labels + (("forced", True),), c.keep)
                  for c in configs if c.knockouts]
        configs = [SweepConfig(c.knockouts, c.record, 0, c.labels + (("forced", False),), c.keep)
                   for c in configs] + forced
    return configs


__all__ = ["BASELINE_RECORD", "KO_TYPES", "PRESETS", "TOPK_PERCENTS", "TOPK_SELECTIONS", "UnknownPresetError",
           "from_layer", "preset", "topk", "upto_layer", "window", "window_widths"]
