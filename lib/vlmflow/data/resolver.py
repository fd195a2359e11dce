"""One resolver for every data name: `resolve(name, n, seed)` -> `Data` (keys, image loaders, ground truth).

The names, one spelling each, used by the CLI (``--data``), the notebooks' ``data`` parameter, ``figures.toml`` and
the Python API (`vf.sweep`, `stored_sweep`, `stored_localization`, `stored_evaluate`):

- ``toy-test`` / ``toy-val`` / ``toy-train``: the toy world's seeded scenes of that split (scene ``i`` is
  ``make_scene(seed, split, i)``; 100 scenes when ``n`` is None); ground truth: the scenes (objects, questions).
- ``coco-sample``: the shipped 100-image COCO val2017 sample (`coco_sample`, checksums verified); ground truth:
  its `CocoSample` (instances, captions).
- ``toy-clips-test`` / ``toy-clips-val``: the toy video world's seeded clips (``toy.clips.make_clip(seed, split,
  i)``, 2-4 frames; 100 when ``n`` is None); each item loads as a ``vlmflow.adapters.base.Video`` (its frames, one
  model input through the adapter's video input); ground truth: ``truth(i)`` -> the ``Clip`` (per-frame tracks,
  events, questions).
- ``pope`` / ``mme``: the benchmarks' yes/no questions (`pope_questions` with ``sampling``, `mme_questions`);
  ground truth: the records. Their images (COCO val2014, MME's own) are not shipped, so ``images`` is empty.
- a path: a COCO-format folder (``instances.json``, ``images/``), its instances file, or a folder of image files
  (``.jpg``/``.jpeg``/``.png``, keyed by file name, no ground truth). Their ``data_id`` ends in ``@sha256:...``, a
  fingerprint of the content (`content_fingerprint` over the annotation files and the used images' bytes), so that
  results keyed by it are recomputed, or refused by a result folder, when a file changes.

Any other name raises `UnknownDatasetError` with the valid list (earlier spellings such as ``coco_sample``, ``toy``
and ``coco`` are refused the same way, naming the one to use). `vlmflow.sweep.sweep_images` and
`vlmflow.localize.load_sample` are thin callers of `resolve`.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from vlmflow.data.registry import UnknownDatasetError

TOY_SPLITS = {"toy-test": "test", "toy-val": "val", "toy-train": "train"}
CLIP_SPLITS = {"toy-clips-test": "test", "toy-clips-val": "val"}
DATA_NAMES = (*TOY_SPLITS, "coco-sample", "pope", "mme", *CLIP_SPLITS)
RETIRED = {"coco_sample": "coco-sample", "coco": "coco-sample", "toy": "toy-test", "toy_test": "toy-test",
           "toy_val": "toy-val", "toy_train": "toy-train"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VALID = f"{', '.join(DATA_NAMES)}, a COCO-format folder (instances.json, images/), its instances.json, or a folder of images"
DEFAULT_TOY_SCENES = 100


@dataclass(frozen=True)
class DataImage:
    """One image: a stable key (the result stores' ``image`` column) and a loader (-> RGB ``PIL.Image``)."""

    key: str
    load: Callable[[], Any]


@dataclass
class Data:
    """A resolved data name. ``data_id`` names it in provenance (with the seed and scene settings for toy splits);
    ``truth`` is the ground truth (toy: ``truth(i)`` -> scene ``i``; a `CocoSample`, POPE / MME records, or None for a plain image folder)."""

    name: str
    data_id: str
    images: list[DataImage]
    truth: Any = None
    seed: int = 0
    n: int | None = None
    _coco: Any = field(default=None, repr=False)

    @property
    def keys(self) -> list[str]:
        return [im.key for im in self.images]

    @property
    def split(self) -> str | None:
        """The toy split (``"test"`` ...), or None for other data."""
        return TOY_SPLITS.get(self.name)

    def coco(self, folder: str | os.PathLike | None = None):
        """The data as a COCO-format `CocoSample` (localization, re-prompting): toy scenes are written once (exact
        masks, questions) into ``folder/<split>-seed<seed>-n<n>-<scene settings>`` and read back."""
        if self._coco is not None:
            return self._coco
        if self.split is None:
            raise UnknownDatasetError(f"data {self.name!r} has no COCO-format view (no instances and images)")
        import tempfile

        from vlmflow.data.coco import CocoSample
        from vlmflow.toy.scenes import scene_settings_id, write_coco

        n = DEFAULT_TOY_SCENES if self.n is None else self.n
        out = Path(folder or tempfile.mkdtemp(prefix="vlmflow-toy-")) / f"{self.name}-seed{self.seed}-n{n}-{scene_settings_id()}"
        if not (out / "instances.json").is_file():
            write_coco(out, seed=self.seed, n=n, split=self.split, progress=False)
        return CocoSample.from_folder(out)


def unknown(name: str) -> UnknownDatasetError:
    hint = f" (use {RETIRED[name]!r})" if name in RETIRED else ""
    return UnknownDatasetError(f"unknown data {name!r}{hint}; valid: {VALID}")


def exact_truth_split(name: str, who: str, allowed=("toy-test", "toy-val")) -> str:
    """The toy split (``"test"``...) of data ``name`` for a page that needs exact ground truth (``who`` names it in
    the error); any other name raises `UnknownDatasetError` listing ``allowed``."""
    if name not in allowed:
        raise UnknownDatasetError(f"{who}: data={name!r} has no exact ground truth; use one of {', '.join(allowed)}")
    return TOY_SPLITS[name]


def check_count(n: int | None) -> int | None:
    if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
        from vlmflow.errors import UsageError

        raise UsageError(f"n_images must be a whole number >= 1 (or None for all images), got {n!r}")
    return None if n is None else int(n)


def resolve(name: str, n: int | None = None, seed: int = 0, *, sampling: str = "random") -> Data:
    """The first ``n`` items of data ``name`` (all when None; toy splits: ``DEFAULT_TOY_SCENES``) for ``seed``."""
    n = check_count(n)
    name = str(name)
    if name in TOY_SPLITS:
        return _toy(name, n, int(seed))
    if name in CLIP_SPLITS:
        return _toy_clips(name, n, int(seed))
    if name == "coco-sample":
        from vlmflow.data.coco import coco_sample

        return _coco_data(name, "coco-sample", coco_sample(progress=False), n, seed)
    if name in ("pope", "mme"):
        from vlmflow.data import mme_questions, pope_questions

        records = pope_questions(sampling, progress=False) if name == "pope" else mme_questions(progress=False)
        data_id = f"pope:{sampling}" if name == "pope" else "mme"
        return Data(name, data_id, [], records[:n], seed=seed, n=n)
    path = Path(name)
    if path.is_file() and path.suffix == ".json":
        from vlmflow.data.coco import CocoSample

        sample = CocoSample.from_folder(Path(os.path.abspath(path)).parent, instances=path.name)
        return _coco_data(name, f"coco:{os.path.abspath(path)}", sample, n, seed, content=path)
    if path.is_dir() and (path / "instances.json").is_file():
        from vlmflow.data.coco import CocoSample

        sample = CocoSample.from_folder(path)
        return _coco_data(name, f"coco:{os.path.abspath(path)}", sample, n, seed, content=path / "instances.json")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            from vlmflow.errors import DataNotAvailableError

            raise DataNotAvailableError(f"{path}: no instances.json and no image files ({', '.join(IMAGE_SUFFIXES)})")
        from vlmflow.adapters.base import load_image

        images = [DataImage(p.name, lambda p=p: load_image(p)) for p in files[:n]]
        return Data(name, f"images:{os.path.abspath(path)}@{content_fingerprint(files[:n])}", images, None, seed=seed,
                    n=n)
    if os.sep in name or name.endswith(".json"):
        from vlmflow.errors import DataNotAvailableError

        raise DataNotAvailableError(f"data {name!r}: no such folder or file; valid: {VALID}")
    raise unknown(name)


def _toy(name: str, n: int | None, seed: int) -> Data:
    from vlmflow.toy.scenes import make_scene, scene_settings_id

    split, count = TOY_SPLITS[name], DEFAULT_TOY_SCENES if n is None else n
    images = [DataImage(f"{name}-{i:05d}", lambda i=i: make_scene(seed, split, i).image) for i in range(count)]
    return Data(name, f"{name}:seed={seed}:scenes={scene_settings_id()}", images,
                truth=partial(make_scene, seed, split), seed=seed, n=n)


def _toy_clips(name: str, n: int | None, seed: int) -> Data:
    """Clips of the default ``ClipConfig`` (the settings the toy Qwen2-VL learns clips with), named in the data id
    by seed and clip settings."""
    from vlmflow.adapters.base import Video
    from vlmflow.toy.clips import clip_settings_id, make_clip

    split, count = CLIP_SPLITS[name], DEFAULT_TOY_SCENES if n is None else n
    images = [DataImage(f"{name}-{i:05d}", lambda i=i: Video(make_clip(seed, split, i).images))
              for i in range(count)]
    return Data(name, f"{name}:seed={seed}:clips={clip_settings_id()}", images, truth=partial(make_clip, seed, split),
                seed=seed, n=n)


def _coco_data(name: str, data_id: str, sample, n: int | None, seed: int, content: Path | None = None) -> Data:
    """``content``: the instances file of a user's folder, whose bytes and those of the used images go into the id
    (the shipped ``coco-sample`` is pinned by the registry's SHA-256 checks instead)."""
    ids = sample.image_ids[:n]
    images = [DataImage(f"{i:012d}", lambda i=i: sample.image(i)) for i in ids]
    if content is not None:
        captions = sample.root / "captions.json"
        truth = [content, *([captions] if captions.is_file() else [])]
        data_id = f"{data_id}@{content_fingerprint([*truth, *(sample.image_path(i) for i in ids)])}"
    return Data(name, data_id, images, sample, seed=seed, n=n, _coco=sample)


def content_fingerprint(files) -> str:
    """``sha256:`` (16 hex digits) over each file's name and bytes, in order: a replaced image or an edited
    annotation file gives another fingerprint, so a result keyed by it is never read back for other data."""
    h = hashlib.sha256()
    for f in files:
        f = Path(f)
        h.update(f.name.encode() + b"\0")
        try:
            h.update(f.read_bytes())
        except OSError:
            h.update(b"<missing>")  # reading the image later names the file; the id still differs from a present one
        h.update(b"\0")
    return f"sha256:{h.hexdigest()[:16]}"
