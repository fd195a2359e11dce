"""Driving a whole sweep: its images, its key, and the one stored run behind ``vlmflow sweep``, ``vf.sweep`` and
``sweep_scores.stored_sweep``.

Where it sits: :func:`sweep_images` reads the data through ``vlmflow.data.resolve``; :func:`sweep_settings` is the
sweep's key (``vlmflow.store.provenance``); :func:`stored_sweep_rows` opens the keyed result folder
(``vlmflow.runner.Experiment``), runs the engine (``vlmflow.sweep.SweepEngine``) on what is missing with
:func:`run_sweep`, and returns the rows of exactly the images and configurations asked for. The CLI, ``vf.sweep``
and the notebooks' ``stored_sweep`` differ only in where the folder is (``--out`` / ``out=`` exactly, or a results
folder holding one folder per key) and in how the configurations are named (a preset, or ``configs_for``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmflow.sweep import DEFAULT_QUESTION, SweepConfig, SweepEngine, SweepError

if TYPE_CHECKING:
    import pandas as pd

    from vlmflow.model import VLM


@dataclass
class SweepImage:
    """One image of a sweep's data: a stable key (the store's ``image`` column) and a loader."""

    key: str
    load: Any  # () -> PIL image


def sweep_images(data: str, n_images: int | None = None, seed: int = 0) -> tuple[str, list[SweepImage]]:
    """(data id, images) for ``data``, any name `vlmflow.data.resolve` knows (``"toy-test"``: scenes 0..n-1 for
    ``seed``; ``"coco-sample"``; a COCO folder, its ``instances.json`` or a folder of image files)."""
    from vlmflow.data import resolve

    if n_images is not None and (isinstance(n_images, bool) or int(n_images) != n_images or n_images < 1):
        raise SweepError(f"n_images must be a whole number >= 1 (or None for all images), got {n_images!r}")
    resolved = resolve(data, n_images, seed)
    if not resolved.images:
        from vlmflow.errors import DataNotAvailableError

        raise DataNotAvailableError(f"sweep data {data!r} has no images here (its questions only); use a toy split, "
                                    f"coco-sample, a COCO folder or a folder of images")
    return resolved.data_id, [SweepImage(im.key, im.load) for im in resolved.images]


def run_sweep(vlm: VLM, images: Sequence[SweepImage], configs: Sequence[SweepConfig], store, *,
              question: str = DEFAULT_QUESTION, max_new_tokens: int = 64, batch_size: int = 32,
              shard: tuple[int, int] = (0, 1), progress: bool = True, images_per_batch: int = 4) -> int:
    """Run ``configs`` on this shard's images, skipping keys already in ``store`` (a ``vlmflow.store.ResultStore``);
    one atomic part per image. Returns the number of configurations computed."""
    i, n = shard
    done = store.done()
    todo = [(im, [c for c in configs if (im.key, c.spec_id) not in done])
            for k, im in enumerate(images) if k % n == i]
    return compute(vlm, [(im, cs) for im, cs in todo if cs], store, question=question, max_new_tokens=max_new_tokens,
                   batch_size=batch_size, progress=progress, images_per_batch=images_per_batch)


def compute(vlm: VLM, todo: Sequence[tuple[SweepImage, list[SweepConfig]]], store, *, question: str,
            max_new_tokens: int, batch_size: int, progress: bool, images_per_batch: int = 4) -> int:
    """Run each image's missing configurations (``todo``) and commit one part per image. Up to ``images_per_batch``
    consecutive images with the same missing configurations run together (``SweepEngine.run_many``)."""
    from vlmflow.runner import progress_bar
    from vlmflow.sweep_rows import attention_rows, result_rows

    engine = SweepEngine(vlm, max_new_tokens=max_new_tokens, batch_size=batch_size)
    groups: list[list] = []
    for im, cs in todo:
        if groups and len(groups[-1]) < images_per_batch and groups[-1][0][1] == cs:
            groups[-1].append((im, cs))
        else:
            groups.append([(im, cs)])
    computed = 0
    with progress_bar(None, f"sweep {len(todo)} images", progress, total=sum(len(cs) for _, cs in todo),
                      unit="config") as bar:
        for group in groups:
            cs = group[0][1]
            per_image = engine.run_many([im.load() for im, _ in group], cs, question)
            for (im, _), results in zip(group, per_image):
                store.write_part(im.key, result_rows(results, image=im.key), attention_rows(results, image=im.key))
                computed += len(cs)
                bar.update(len(cs))
    return computed


def sweep_settings(model, data_id: str, *, question: str = DEFAULT_QUESTION, max_new_tokens: int = 64,
                   device: str | None = None, dtype=None, **extra) -> dict:
    """A sweep's key: ``vlmflow.store.provenance`` of the model (name or loaded ``VLM``: the same weights fingerprint),
    the data id (the toy seed and scene settings, a user folder's content), question, decoding, the device and dtype
    as requested (``vlmflow.runner.requested``; ``"None"``: the checkpoint's own) and ``extra`` (a notebook's
    parameters that change a number, e.g. what is recorded). Batch size and sharding change no number."""
    from vlmflow.runner import dtype_key, requested
    from vlmflow.store import provenance

    device, dtype = requested(model, device, dtype)
    return provenance(model, data_id, question=question, max_new_tokens=int(max_new_tokens), decoding="greedy",
                      device=device, dtype=dtype_key(dtype), **extra)


def check_preset(out, preset: str) -> None:
    """SweepError unless the result folder ``out`` is new or holds a sweep of ``preset`` (its manifest's provenance):
    ``vf.sweep`` and ``vlmflow sweep --out`` never mix two presets' configurations in one folder."""
    from vlmflow import store as st

    held = st.read_manifest(out).get("provenance", {}).get("preset") if (Path(out) / st.MANIFEST).is_file() else None
    if held not in (None, preset):
        raise SweepError(f"{out} holds a {held!r} sweep; write the {preset!r} sweep into another folder")


def stored_sweep_rows(root, configs_for: Callable[[int], Sequence[SweepConfig]], *, model=None, vlm: VLM | None = None,
                      data: str = "toy-test", n_images: int | None = None, seed: int = 0, device: str | None = None,
                      dtype=None, question: str = DEFAULT_QUESTION, max_new_tokens: int = 64, batch_size: int = 32,
                      shard: str | None = None, progress: bool = True, exact: bool = False,
                      extra_settings: Mapping[str, Any] | None = None,
                      provenance: Mapping[str, Any] | None = None, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """The one stored sweep: ``configs_for(n_layers)`` on the first ``n_images`` of ``data`` (this ``shard``'s
    images), in the folder of its key (``vlmflow.runner.locate``; ``exact``: ``root`` itself), computing only the
    (image, configuration) keys not stored and loading the model (``model``, or the given ``vlm``) only then.
    ``keys``: only these image keys of the data (same key and folder: e.g. clips of one frame count, whose
    per-frame knockouts differ from another count's).

    -> the rows of exactly these images and configurations; ``attrs``: ``store`` (the folder), ``computed``
    (configurations), ``computed_images``, ``n_layers``, ``n_images``, ``n_configs``, ``data_id``,
    ``manifest``."""
    from vlmflow.runner import Experiment, requested
    from vlmflow.store import read_manifest, shard_of

    i, n = shard_of(shard)
    data_id, images = sweep_images(data, n_images, seed)
    if keys is not None:
        known = {im.key for im in images}
        unknown = [k for k in keys if k not in known]
        if unknown:
            raise SweepError(f"image key {unknown[0]!r} is not among the {len(images)} images of data {data!r}")
        wanted = set(keys)
        images = [im for im in images if im.key in wanted]
    device, dtype = requested(vlm if vlm is not None else str(model), device, dtype)
    settings = sweep_settings(vlm if vlm is not None else str(model), data_id, question=question,
                              max_new_tokens=max_new_tokens, device=device, dtype=dtype, **dict(extra_settings or {}))
    exp = Experiment(root, settings, kind="sweep", model=model, vlm=vlm, device=device, dtype=dtype, exact=exact,
                     provenance=dict(provenance or {}))
    configs = {c.spec_id: c for c in configs_for(exp.n_layers)}
    mine = [im for k, im in enumerate(images) if k % n == i]
    todo = [(im, [configs[s] for s in specs]) for im, specs in exp.missing((im, im.key, list(configs)) for im in mine)]
    computed = compute(exp.vlm, todo, exp.store, question=question, max_new_tokens=max_new_tokens,
                       batch_size=batch_size, progress=progress) if todo else 0
    rows = exp.rows([im.key for im in images], configs)
    rows.attrs.update(store=str(exp.folder), computed=computed, computed_images=len(todo), n_layers=exp.n_layers,
                      n_images=len(images), n_configs=len(configs), data_id=data_id, manifest=read_manifest(exp.folder))
    return rows


def sweep(vlm: VLM, data: str, preset: str = "from-layer", out=None, *, n_images: int | None = None,
          seed: int = 0, question: str = DEFAULT_QUESTION, max_new_tokens: int = 64, force_prefix: int = 0,
          batch_size: int = 32, shard: str | None = None, progress: bool = True) -> pd.DataFrame:
    """``vf.sweep(vlm, data, preset=..., out=...)``: the knockout sweep of ``vlmflow sweep`` from Python.

    Runs ``preset`` (``vlmflow.presets``) on the first ``n_images`` of ``data`` into the result folder ``out``
    (:func:`stored_sweep_rows` with ``exact=True``: the key is the CLI's, so a folder the CLI filled is read back),
    resuming what the folder holds; returns the rows of this sweep (``attrs``: ``manifest``, ``computed``...). A folder
    of other settings is refused by the store, one of another preset by :func:`check_preset`: results never mix."""
    from vlmflow.presets import PRESETS, UnknownPresetError
    from vlmflow.presets import preset as preset_configs

    if out is None:
        raise SweepError("vf.sweep needs out=: the result folder (resumable; one folder per experiment)")
    if preset not in PRESETS:
        raise UnknownPresetError(f"unknown sweep preset {preset!r}; presets: {', '.join(PRESETS)}")
    check_preset(out, preset)
    return stored_sweep_rows(out, lambda n_layers: preset_configs(preset, n_layers, force_prefix=force_prefix),
                             vlm=vlm, data=data, n_images=n_images, seed=seed, question=question,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, shard=shard, progress=progress,
                             exact=True, provenance={"preset": preset, "command": "vf.sweep", "shard": shard})


__all__ = ["SweepImage", "check_preset", "compute", "run_sweep", "stored_sweep_rows", "sweep", "sweep_images",
           "sweep_settings"]
