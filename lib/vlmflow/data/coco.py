"""COCO-format image folders: the shipped 100-image val2017 sample, or any folder laid out the same way.

A folder holds ``instances.json`` (pycocotools-readable), optionally ``captions.json``, and ``images/<file_name>``.
`coco_sample()` reaches ``coco_sample/`` through `vlmflow.data.fetch` (so its checksums are verified);
`CocoSample.from_folder` opens any such folder (the toy world writes its scenes in the same format). POPE-style
questions are built from a `CocoSample` in `vlmflow.data.pope`; localization uses `mask` as ground truth.
"""
from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmflow.errors import DataNotAvailableError


@dataclass
class CocoSample:
    """Instances (a pycocotools ``COCO``), captions by image id, and image files of one COCO-format folder."""

    root: Path
    coco: Any  # pycocotools.coco.COCO of instances.json
    captions: dict[int, list[str]] = field(default_factory=dict)
    image_dir: Path | None = None

    @classmethod
    def from_folder(cls, folder: Path | str, instances: str = "instances.json", captions: str = "captions.json",
                    images: str = "images") -> "CocoSample":
        from pycocotools.coco import COCO

        folder = Path(folder)
        inst = folder / instances
        if not inst.is_file():
            raise DataNotAvailableError(f"{inst}: no COCO instances file in {folder}")
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            coco = COCO(str(inst))
        caps: dict[int, list[str]] = defaultdict(list)
        cap_file = folder / captions
        if cap_file.is_file():
            for ann in sorted(json.loads(cap_file.read_text())["annotations"], key=lambda a: a["id"]):
                caps[ann["image_id"]].append(ann["caption"].strip())
        return cls(root=folder, coco=coco, captions=dict(caps), image_dir=folder / images)

    # ---- images ------------------------------------------------------------------------------------------
    @property
    def image_ids(self) -> list[int]:
        return sorted(self.coco.getImgIds())

    def image_info(self, image_id: int) -> dict:
        try:
            return self.coco.imgs[image_id]
        except KeyError:
            raise DataNotAvailableError(f"image id {image_id} is not in {self.root / 'instances.json'}") from None

    def image_path(self, image_id: int) -> Path:
        return (self.image_dir or self.root) / self.image_info(image_id)["file_name"]

    def image(self, image_id: int):
        """The image as an RGB ``PIL.Image`` (ImageReadError naming the file when it cannot be read)."""
        from vlmflow.adapters.base import load_image

        return load_image(self.image_path(image_id))

    # ---- annotations -------------------------------------------------------------------------------------
    def annotations(self, image_id: int, category: str | None = None) -> list[dict]:
        """Instance annotations of one image (sorted by id), optionally of one category name."""
        self.image_info(image_id)
        cat_ids = [self.category_id(category)] if category is not None else []
        ids = self.coco.getAnnIds(imgIds=[image_id], catIds=cat_ids)
        return [self.coco.anns[i] for i in sorted(ids)]

    def mask(self, annotation: dict | int) -> np.ndarray:
        """Binary mask uint8[H, W] of one annotation (dict or id), via pycocotools ``annToMask`` (polygons and RLE)."""
        ann = self.coco.anns[annotation] if isinstance(annotation, (int, np.integer)) else annotation
        return self.coco.annToMask(ann)

    def object_mask(self, image_id: int, category: str) -> np.ndarray:
        """Union bool[H, W] of the masks of every instance of `category` in the image (all False if none)."""
        info = self.image_info(image_id)
        out = np.zeros((info["height"], info["width"]), dtype=bool)
        for ann in self.annotations(image_id, category):
            out |= self.mask(ann).astype(bool)
        return out

    # ---- categories --------------------------------------------------------------------------------------
    @property
    def category_names(self) -> list[str]:
        """All category names, in category-id order (80 for COCO, whether or not they occur)."""
        return [self.coco.cats[i]["name"] for i in sorted(self.coco.cats)]

    def category_id(self, name: str) -> int:
        for cid, cat in self.coco.cats.items():
            if cat["name"] == name:
                return cid
        raise DataNotAvailableError(f"unknown category {name!r} in {self.root / 'instances.json'}")

    def objects(self, image_id: int) -> set[str]:
        """Names of the categories annotated in an image (crowd annotations included)."""
        return {self.coco.cats[a["category_id"]]["name"] for a in self.annotations(image_id)}


def coco_sample(root: Path | str | None = None, mirror: str | None = None, progress: bool = True) -> CocoSample:
    """The 100-image COCO val2017 sample (instances, captions, images), checksums verified by `fetch`."""
    from vlmflow.data.fetcher import fetch

    return CocoSample.from_folder(fetch("coco-sample", root=root, mirror=mirror, progress=progress))
