"""Token-grid -> original-pixel geometry: which pixels of the ORIGINAL image each image token of a VLM covers.

Every adapter's ``Adapter.geometry(image_size, inputs, row)`` returns an :class:`ImageGeometry` built by one of the
functions here (``llava_geometry``, ``internvl_geometry``, ``qwen2_vl_geometry``); ``localize.py`` and the heatmap
figures read it. Each function undoes that model's preprocessing by reading the processor's actual settings (sizes,
patch size, merge size, pad / crop flags) and, where transformers exposes one, calling the processor's own helper
(InternVL's tile chooser, Qwen2-VL's ``smart_resize``), so the geometry cannot drift from what the model saw.

Conventions
- Boxes are ``float64 ndarray[N, 4]`` = (x0, y0, x1, y1) in original-image pixel units, half-open, one per image
  token in the order the tokens appear in the prompt. Each resize maps the full pixel extent [0, W] onto [0, W']
  (as PIL does), so boxes are exact rational coordinates, not rounded.
- A token that covers padding added by the preprocessing (LLaVA pad-to-square) has its box clipped to the image;
  a token lying wholly in the padding gets a zero-area box and ``valid[i] == False``.
- ``content`` is the part of the original image the tokens of block 0 see: the whole image, except for the
  CLIP shortest-edge + center-crop path, where only the central crop reaches the model.
- ``blocks`` split the token sequence into grids: one for LLaVA / Qwen2-VL; for InternVL one per tile (row-major,
  as the processor emits them) followed by the ``thumbnail``. Each block on its own tiles ``content`` once.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from vlmflow.errors import VlmflowError


class GeometryError(VlmflowError):
    """The preprocessing of a processor cannot be undone (unknown setting) or a query falls outside the tokens."""


class Block(NamedTuple):
    """A rows x cols grid of tokens, stored row-major from token index ``first_token``."""

    name: str
    rows: int
    cols: int
    first_token: int

    @property
    def n_tokens(self) -> int:
        return self.rows * self.cols

    @property
    def tokens(self) -> range:
        return range(self.first_token, self.first_token + self.n_tokens)


@dataclass(frozen=True)
class ImageGeometry:
    """Where each image token of one image looks, in original pixels. See the module docstring for conventions."""

    image_size: tuple[int, int]  # (W, H) of the original image
    boxes: np.ndarray  # float64 [N, 4] x0, y0, x1, y1
    blocks: list[Block]
    content: tuple[float, float, float, float] = field(default=None)  # (x0, y0, x1, y1) the tokens see
    method: str = ""  # which preprocessing path was undone, for provenance

    def __post_init__(self):
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        object.__setattr__(self, "boxes", boxes)
        if self.content is None:
            object.__setattr__(self, "content", (0.0, 0.0, float(self.image_size[0]), float(self.image_size[1])))
        n = sum(b.n_tokens for b in self.blocks)
        if n != len(boxes):
            raise GeometryError(f"ImageGeometry: blocks hold {n} tokens but {len(boxes)} boxes were given")

    @property
    def n_tokens(self) -> int:
        return len(self.boxes)

    @property
    def valid(self) -> np.ndarray:
        """bool [N]: the token covers a non-empty part of the original image (False: padding only)."""
        b = self.boxes
        return (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])

    def _block(self, block: int | str) -> Block:
        if isinstance(block, str):
            for b in self.blocks:
                if b.name == block:
                    return b
            raise GeometryError(f"no block named {block!r}; blocks: {[b.name for b in self.blocks]}")
        try:
            return self.blocks[block]
        except IndexError:
            raise GeometryError(f"block {block} out of range: this geometry has {len(self.blocks)} blocks") from None

    def box_centers(self) -> np.ndarray:
        """float64 [N, 2]: (x, y) centre of each token's box."""
        b = self.boxes
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)

    def token_at(self, x: float, y: float, block: int | str = 0) -> int:
        """Index (into the image-token sequence) of the token of ``block`` whose box contains pixel (x, y)."""
        blk = self._block(block)
        boxes = self.boxes[blk.first_token: blk.first_token + blk.n_tokens]
        W, H = self.image_size
        # half-open boxes, except that the image's right / bottom border belongs to the last token
        inside_x = (boxes[:, 0] <= x) & ((x < boxes[:, 2]) | ((x == boxes[:, 2]) & (x >= W)))
        inside_y = (boxes[:, 1] <= y) & ((y < boxes[:, 3]) | ((y == boxes[:, 3]) & (y >= H)))
        hit = np.flatnonzero(inside_x & inside_y & self.valid[blk.tokens.start: blk.tokens.stop])
        if len(hit) == 0:
            raise GeometryError(f"pixel ({x}, {y}) is covered by no token of block {blk.name!r} "
                                f"(image {W}x{H}, tokens see {self.content})")
        return blk.first_token + int(hit[0])

    def pixel_edges(self, block: int | str = 0) -> tuple[np.ndarray, np.ndarray]:
        """Integer pixel edges of each token box in ``block`` (rounded half up, identically for shared edges):
        int64 [n, 4]. Two tokens sharing a float edge get the same integer edge, so painting never double-paints."""
        blk = self._block(block)
        b = self.boxes[blk.first_token: blk.first_token + blk.n_tokens]
        return blk, np.floor(b + 0.5).astype(np.int64)

    def heatmap(self, values: Sequence[float] | np.ndarray, block: int | str = 0) -> np.ndarray:
        """float64 [H, W]: each token's value painted over its box; pixels no token of ``block`` covers are NaN.

        ``values`` holds one value per image token (length N, the block's slice is taken) or one per token of
        the block."""
        blk, edges = self.pixel_edges(block)
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(v) == self.n_tokens:
            v = v[blk.first_token: blk.first_token + blk.n_tokens]
        elif len(v) != blk.n_tokens:
            raise GeometryError(f"heatmap: got {len(v)} values; expected {self.n_tokens} (all tokens) or "
                                f"{blk.n_tokens} (block {blk.name!r})")
        W, H = self.image_size
        out = np.full((H, W), np.nan)
        for (x0, y0, x1, y1), value in zip(edges, v):
            out[max(y0, 0):min(y1, H), max(x0, 0):min(x1, W)] = value
        return out


# ----------------------------------------------------------------------------------------------------------------
# helpers

def _image_processor(processor):
    return getattr(processor, "image_processor", processor)


def _get(settings, key, default=None):
    """Read a SizeDict / dict / attribute uniformly."""
    if settings is None:
        return default
    if isinstance(settings, dict):
        return settings.get(key, default)
    return getattr(settings, key, default)


def _grid_boxes(rows: int, cols: int, cell_h: float, cell_w: float) -> np.ndarray:
    """float64 [rows*cols, 4] row-major boxes of a regular grid starting at (0, 0)."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.stack([c * cell_w, r * cell_h, (c + 1) * cell_w, (r + 1) * cell_h], axis=1).astype(np.float64)


def _resized_hw(ip, size, height: int, width: int) -> tuple[int, int]:
    """Output (h, w) of PilBackend / TorchvisionBackend ``resize`` for this size dict: the same branches, the
    same transformers helpers."""
    from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
    from transformers.image_utils import ChannelDimension

    shortest, longest = _get(size, "shortest_edge"), _get(size, "longest_edge")
    if shortest and longest:
        return tuple(get_size_with_aspect_ratio((height, width), shortest, longest))
    if shortest:
        dummy = np.broadcast_to(np.uint8(0), (1, height, width))  # only its shape is read
        return tuple(get_resize_output_image_size(dummy, size=shortest, default_to_square=False,
                                                  input_data_format=ChannelDimension.FIRST))
    if _get(size, "max_height") and _get(size, "max_width"):
        from transformers.image_transforms import get_image_size_for_max_height_width
        return tuple(get_image_size_for_max_height_width((height, width), size["max_height"], size["max_width"]))
    if _get(size, "height") and _get(size, "width"):
        return int(_get(size, "height")), int(_get(size, "width"))
    raise GeometryError(f"{type(ip).__name__}: cannot undo a resize with size={dict(size)}")


# ----------------------------------------------------------------------------------------------------------------
# LLaVA-1.5 (and any single-grid CLIP-style processor)

def llava_geometry(image_size: tuple[int, int], processor, patch_size: int | None = None) -> ImageGeometry:
    """Geometry of a LLaVA(-1.5) processor: [pad to square] -> resize -> [center crop] -> patch grid.

    Paths (all read from the image processor's settings):
    - ``do_pad`` (llava-hf ``LlavaImageProcessor``, llava-1.5-*-hf): the image is centred on a square canvas of
      side max(W, H) filled with the mean colour, resized to ``crop_size`` (336), cut into 24x24 patches of 14 px.
      Tokens over the padding get clipped boxes; those wholly in the padding are zero-area (``valid`` False).
    - plain ``CLIPImageProcessor``: shortest edge resized to ``size``, then the central ``crop_size`` is cut;
      tokens tile only that central crop, which ``ImageGeometry.content`` reports in original pixels.
    - square resize (``size == crop_size`` on square images, the toy model): tokens tile the whole image.
    ``patch_size`` defaults to ``processor.patch_size`` (LlavaProcessor) and must be given for a bare image
    processor. With ``vision_feature_select_strategy="default"`` the CLS token is dropped, so tokens = the grid.
    """
    W, H = int(image_size[0]), int(image_size[1])
    ip = _image_processor(processor)
    p = patch_size or getattr(processor, "patch_size", None)
    if not p:
        raise GeometryError(f"{type(processor).__name__}: no patch_size; pass patch_size= (the vision tower's)")
    if getattr(ip, "do_pad", False) and not hasattr(ip, "pad_to_square"):
        raise GeometryError(f"{type(ip).__name__}: do_pad=True without pad_to_square is not supported")

    # 1. pad to a centred square (LlavaImageProcessor.pad_to_square: offset (max - min) // 2)
    if getattr(ip, "do_pad", False) and W != H:
        side = max(W, H)
        ox, oy = (side - W) // 2, (side - H) // 2
        canvas_w = canvas_h = side
        method = "pad-square"
    else:
        ox = oy = 0
        canvas_w, canvas_h = W, H
        method = "resize"
    # 2. resize: the canvas extent [0, canvas] maps onto [0, resized]
    if getattr(ip, "do_resize", True):
        rh, rw = _resized_hw(ip, ip.size, canvas_h, canvas_w)
    else:
        rh, rw = canvas_h, canvas_w
    # 3. center crop (transformers' center_crop: top = (h - ch) // 2; a too-small image is zero-padded centred)
    if getattr(ip, "do_center_crop", False):
        ch, cw = int(_get(ip.crop_size, "height")), int(_get(ip.crop_size, "width"))
        top = (rh - ch) // 2 if ch <= rh else -math.ceil((ch - rh) / 2)
        left = (rw - cw) // 2 if cw <= rw else -math.ceil((cw - rw) / 2)
        if (ch, cw) != (rh, rw):
            method += "+center-crop"
    else:
        ch, cw, top, left = rh, rw, 0, 0
    rows, cols = ch // p, cw // p
    # 4. patch grid in crop pixels -> resized -> canvas -> original, clipped to the real image
    boxes = _grid_boxes(rows, cols, p, p)
    sx, sy = canvas_w / rw, canvas_h / rh
    boxes = (boxes + [left, top, left, top]) * [sx, sy, sx, sy] - [ox, oy, ox, oy]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, W)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, H)
    # what the model sees of the original image (the crop window clipped to it)
    content = (max(0.0, left * sx - ox), max(0.0, top * sy - oy),
               min(float(W), (left + cols * p) * sx - ox), min(float(H), (top + rows * p) * sy - oy))
    return ImageGeometry((W, H), boxes, [Block("grid", rows, cols, 0)], content=content, method=method)


# ----------------------------------------------------------------------------------------------------------------
# InternVL (HF-native, GotOcr2ImageProcessor crop_to_patches)

def _tile_chooser(ip):
    """The processor module's own ``get_optimal_tiled_canvas`` (so the tiling can never disagree with it)."""
    for module in (type(ip).__module__, "transformers.models.got_ocr2.image_processing_pil_got_ocr2"):
        fn = getattr(importlib.import_module(module), "get_optimal_tiled_canvas", None)
        if fn is not None:
            return fn
    raise GeometryError(f"{type(ip).__name__}: no get_optimal_tiled_canvas found to choose InternVL tiles")


def internvl_images_kwargs(processor) -> dict:
    """The image kwargs the InternVL processor really applies (its class defaults such as
    ``crop_to_patches=True`` merged over the image processor's attributes), as its own token counter reads them."""
    ip = _image_processor(processor)
    kw = {"crop_to_patches": ip.crop_to_patches, "min_patches": ip.min_patches, "max_patches": ip.max_patches}
    if hasattr(processor, "_merge_kwargs") and processor is not ip:
        merged = processor._merge_kwargs(tokenizer_init_kwargs=processor.tokenizer.init_kwargs)["images_kwargs"]
        kw.update({k: merged[k] for k in kw if merged.get(k) is not None})
    return kw


def internvl_geometry(image_size: tuple[int, int], processor, config=None) -> ImageGeometry:
    """Geometry of an InternVL processor: dynamic tiles + thumbnail.

    The image is resized to a (cols x rows) canvas of ``size`` tiles (448 px), the grid chosen by the processor's
    own ``get_optimal_tiled_canvas`` between ``min_patches`` and ``max_patches``; tiles are emitted row-major, then,
    when there is more than one tile, a thumbnail = the whole image resized to one tile. Each tile becomes
    g x g tokens, g = image_size / patch_size * downsample_ratio from ``config`` (16 for InternVL3), which must
    agree with ``processor.image_seq_length``; the pixel shuffle keeps row-major order (token (i, j) = patches
    2i..2i+1 x 2j..2j+1). Blocks: ``tile0`` ... ``tile{n-1}``, ``thumbnail`` (or a single ``tile0``).
    """
    W, H = int(image_size[0]), int(image_size[1])
    ip = _image_processor(processor)
    th, tw = int(_get(ip.size, "height")), int(_get(ip.size, "width"))
    seq = getattr(processor, "image_seq_length", None)
    if config is not None:
        vc = config.vision_config
        img = vc.image_size[0] if isinstance(vc.image_size, (list, tuple)) else vc.image_size
        pat = vc.patch_size[0] if isinstance(vc.patch_size, (list, tuple)) else vc.patch_size
        g = int(round(img / pat * config.downsample_ratio))
        if seq is not None and g * g != seq:
            raise GeometryError(f"InternVL: config gives {g}x{g} tokens per tile but processor.image_seq_length={seq}")
    elif seq is not None:
        g = math.isqrt(int(seq))
        if g * g != seq:
            raise GeometryError(f"InternVL: image_seq_length={seq} is not a square grid")
    else:
        raise GeometryError("internvl_geometry needs the model config or an InternVLProcessor (image_seq_length)")

    kw = internvl_images_kwargs(processor)
    if kw["crop_to_patches"] and kw["max_patches"] > 1:
        cols, rows = _tile_chooser(ip)((H, W), (th, tw), kw["min_patches"], kw["max_patches"])
    else:
        cols = rows = 1
    # tile (r, c) covers the original-image rectangle [c*W/cols, (c+1)*W/cols) x [r*H/rows, ...)
    blocks, parts = [], []
    tile_w, tile_h = W / cols, H / rows
    cell = _grid_boxes(g, g, tile_h / g, tile_w / g)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        blocks.append(Block(f"tile{i}", g, g, i * g * g))
        parts.append(cell + [c * tile_w, r * tile_h, c * tile_w, r * tile_h])
    if rows * cols > 1:  # the processor adds the thumbnail only when there are several tiles
        blocks.append(Block("thumbnail", g, g, rows * cols * g * g))
        parts.append(_grid_boxes(g, g, H / g, W / g))
    boxes = np.concatenate(parts)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, W)  # float round-off at the far edge
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, H)
    return ImageGeometry((W, H), boxes, blocks, method=f"tiles {cols}x{rows}" + ("+thumbnail" if rows * cols > 1 else ""))


# ----------------------------------------------------------------------------------------------------------------
# Qwen2-VL / Qwen2.5-VL (dynamic resolution, 2x2 merge)

def qwen2_vl_grid(image_size: tuple[int, int], processor) -> tuple[int, int, int]:
    """(t, h, w) patch grid the Qwen2-VL image processor produces for an image, via its own ``smart_resize``."""
    W, H = int(image_size[0]), int(image_size[1])
    ip = _image_processor(processor)
    smart_resize = getattr(importlib.import_module(type(ip).__module__), "smart_resize", None)
    if smart_resize is None:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
    p, m = ip.patch_size, ip.merge_size
    size = ip.size
    min_pixels = _get(size, "shortest_edge") or getattr(ip, "min_pixels", None)
    max_pixels = _get(size, "longest_edge") or getattr(ip, "max_pixels", None)
    rh, rw = (smart_resize(H, W, factor=p * m, min_pixels=min_pixels, max_pixels=max_pixels)
              if getattr(ip, "do_resize", True) else (H, W))
    return 1, rh // p, rw // p


def qwen2_vl_geometry(image_size: tuple[int, int], image_grid_thw=None, processor=None) -> ImageGeometry:
    """Geometry of a Qwen2-VL / Qwen2.5-VL processor: ``smart_resize`` to multiples of patch*merge (28 px), the
    whole image resized (aspect ratio kept approximately), one token per merge x merge patches (28 x 28 resized
    px), row-major. ``image_grid_thw`` (from the processor's output; the truth of what the model saw) gives the
    (t, h, w) patch grid; without it the grid is recomputed from the processor's settings."""
    W, H = int(image_size[0]), int(image_size[1])
    if processor is None:
        raise GeometryError("qwen2_vl_geometry needs the processor (patch_size, merge_size)")
    ip = _image_processor(processor)
    p, m = int(ip.patch_size), int(ip.merge_size)
    if image_grid_thw is None:
        image_grid_thw = qwen2_vl_grid(image_size, processor)
    t, gh, gw = (int(v) for v in np.asarray(image_grid_thw).reshape(-1)[:3])
    if t != 1:
        raise GeometryError(f"Qwen2-VL geometry: grid t={t}; only still images (t=1) are supported")
    if gh % m or gw % m:
        raise GeometryError(f"Qwen2-VL geometry: grid {gh}x{gw} is not divisible by merge_size={m}")
    rows, cols = gh // m, gw // m
    # the resized image (gh*p x gw*p px) spans the original [0, W] x [0, H]
    boxes = _grid_boxes(rows, cols, H / rows, W / cols)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, W)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, H)
    return ImageGeometry((W, H), boxes, [Block("grid", rows, cols, 0)],
                         method=f"smart-resize {gw * p}x{gh * p}, merge {m}")
