"""A planted mechanism: knockouts that are part of a model, in training and at inference.

A model folder may hold ``plant.json``: the ``vf.Knockout`` specs (in their string form, ``Knockout.parse``) that the
model was trained under and that ``vf.load`` applies by default whenever the model runs (``VLM.generate``,
``VLM.forward``, ``VLM.prefill``, the sweep engine, re-prompting, localization, the toy evaluation), together with
whatever knockouts a caller adds. The plant goes through the one registered attention function
(``vlmflow.attention``): the same masks as a caller's ``vf.Knockout``, no second implementation.

Training (``vlmflow.toy.train``) applies the plant per sample with probability ``probability`` (1: always, the model
then only knows the planted route; < 1: the "soft" variant trained both ways). ``PRESETS`` names the plants of the
shipped toy models (``vlmflow toy train --plant window``): ``window`` leaves the image visible to text and generated
tokens only in decoder layers 3 and 4 (of 8), ``compress`` hides it from the generated tokens in every layer, so every
description must pass through the prompt's text tokens after the image.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlmflow.errors import VlmflowError
from vlmflow.knockout import Knockout

PLANT_FILE = "plant.json"


class PlantError(VlmflowError):
    """A plant.json that cannot be read, or an unknown plant preset."""


@dataclass(frozen=True)
class Plant:
    """Knockouts planted in a model; ``probability`` is the per-sample chance it was applied in training (1 = hard
    plant: at inference always on; the soft variant records its fraction and is shipped without inference plant)."""

    knockouts: tuple[Knockout, ...]
    description: str = ""
    probability: float = 1.0

    @property
    def spec_ids(self) -> list[str]:
        return [k.spec_id for k in self.knockouts]

    def unblocked(self, knockout: Knockout, n_layers: int) -> tuple[Knockout, ...]:
        """The part of ``knockout`` that this plant does not block already: per target role of ``knockout``, the
        layers in which no planted knockout (whole roles, covering ``knockout``'s source) blocks that role. Run
        under the plant, ``knockout`` and its unblocked part block the same attention, so they give the same output
        (the planted-models notebook checks this for top-K). Empty when the plant blocks all of it."""
        from vlmflow.roles import GROUPS

        free_layers: dict[tuple[int, ...], set[str]] = {}
        for role in sorted(knockout.target_roles):
            blocked: set[int] = set()
            for p in self.knockouts:
                if not p.by_position and knockout.source_roles <= p.source_roles and role in p.target_roles:
                    blocked.update(p.layer_indices(n_layers))
            free = tuple(i for i in knockout.layer_indices(n_layers) if i not in blocked)
            if free:
                free_layers.setdefault(free, set()).add(role)
        out = []
        for free, roles in free_layers.items():
            groups = [g for g in ("text", "generated") if set(GROUPS.get(g, (g,))) <= roles]
            covered = {r for g in groups for r in GROUPS.get(g, (g,))}
            target = tuple(groups) + tuple(sorted(roles - covered))
            out.append(Knockout(knockout.source, target, None if len(free) == n_layers else free,
                                knockout.source_positions, knockout.source_frames))
        return tuple(out)

    def to_dict(self) -> dict:
        return {"knockouts": self.spec_ids, "description": self.description,
                "training_probability": self.probability}


# The shipped toy models' plants (8 decoder layers): what each model is built to do.
PRESETS: dict[str, Plant] = {
    "window": Plant((Knockout("image", ("text", "generated"), layers=(0, 1, 2, 5, 6, 7)),),
                    "text and generated tokens read the image only in decoder layers 3 and 4 (0-based, of 8); every "
                    "other layer is blind to it"),
    "compress": Plant((Knockout("image", "generated"),),
                      "the generated tokens never read the image, in any layer; only the prompt's text tokens after "
                      "the image do, so every description passes through them"),
}


def preset(name: str, probability: float = 1.0) -> Plant:
    """The plant ``name`` of ``PRESETS`` trained with ``probability``; PlantError listing the valid names."""
    if name not in PRESETS:
        raise PlantError(f"unknown plant {name!r}; valid plants: {', '.join(PRESETS)}")
    p = PRESETS[name]
    return Plant(p.knockouts, p.description, float(probability))


def read_plant(folder: str | os.PathLike | None) -> Plant | None:
    """The plant recorded in model ``folder`` (None without ``plant.json``); PlantError naming the file if broken."""
    if folder is None:
        return None
    path = Path(folder) / PLANT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        kos = tuple(Knockout.parse(s) for s in data["knockouts"])
        return Plant(kos, str(data.get("description", "")), float(data.get("training_probability", 1.0)))
    except (ValueError, KeyError, TypeError) as exc:
        raise PlantError(f"{path}: not a valid plant ({type(exc).__name__}: {exc}); expected "
                         f'{{"knockouts": ["image:generated@all", ...], "description": "..."}}') from None


def write_plant(folder: str | os.PathLike, plant: Plant) -> Path:
    """Write ``plant.json`` into model ``folder`` (atomically)."""
    from vlmflow.atomic import atomic_write_json

    path = Path(folder) / PLANT_FILE
    atomic_write_json(path, plant.to_dict())
    return path


def with_plant(knockouts, plant: Sequence[Knockout], batch_size: int):
    """A caller's knockouts (any form ``attention.per_row_knockouts`` takes) with ``plant`` added to every row:
    the per-row list of lists that ``attention.active`` compiles. Unchanged when there is no plant."""
    if not plant:
        return knockouts
    from vlmflow.attention import per_row_knockouts

    return [list(plant) + row for row in per_row_knockouts(knockouts, batch_size)]


def sample_rows(plant: Plant, batch_size: int, generator) -> list[list[Knockout]]:
    """Per-row knockouts of one training batch: each row carries the plant with probability ``plant.probability``
    (one draw per row from ``generator``, a torch.Generator, so a resumed run draws the same)."""
    import torch

    if plant.probability >= 1:
        return [list(plant.knockouts) for _ in range(batch_size)]
    draws = torch.rand(batch_size, generator=generator) < plant.probability
    return [list(plant.knockouts) if bool(d) else [] for d in draws]


__all__ = ["PLANT_FILE", "PRESETS", "Plant", "PlantError", "preset", "read_plant", "sample_rows", "with_plant",
           "write_plant"]
