"""Token -> pixel geometry (vlmflow.adapters.geometry) on every real COCO image size, with the released models'
default processor settings, checked against independent oracles:

- coverage: a pixel coverage count (2-D difference array) shows the boxes of each block tile the image content
  exactly once -- rounding every box inward never double-covers a pixel (no overlap beyond one pixel of rounding)
  and rounding outward never leaves one uncovered (no gap), and the areas sum to the content area;
- token counts: the real image processors / processors built from the same settings emit as many tokens;
- positions: a colour-gradient image (red = x, green = y) pushed through the real image processor; the mean colour
  of the pixels each token is made of decodes to that token's box centre (tile order, row-major order, padding
  offsets and crop offsets all show up here).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vlmflow.adapters import geometry as G


def _data_root() -> Path:
    try:
        from vlmflow.data import data_root
        return Path(data_root())
    except Exception:  # the data module may not exist yet / may not resolve here
        env = os.environ.get("VLMFLOW_DATA")
        return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


IMAGES = sorted((_data_root() / "coco_sample" / "images").glob("*.jpg"))
if not IMAGES:
    pytest.skip(f"no COCO sample images under {_data_root()}", allow_module_level=True)


def _sizes() -> list[tuple[int, int]]:
    from PIL import Image
    sizes = []
    for path in IMAGES:
        with Image.open(path) as im:  # reads the header only
            sizes.append(im.size)
    return sizes


SIZES = _sizes()
# a small sample for the (slower) real-processor checks: extreme aspect ratios and the most common sizes
_by_ratio = sorted(set(SIZES), key=lambda s: s[0] / s[1])
SAMPLE = list(dict.fromkeys([_by_ratio[0], _by_ratio[-1], (640, 480), (480, 640), (640, 427)]))
SAMPLE = [s for s in SAMPLE if s in SIZES] or _by_ratio[:3]


# ---------------------------------------------------------------------------------------------------------------
# the released models' default processor settings

def llava_pad_processor():
    """llava-hf/llava-1.5-7b-hf: LlavaImageProcessor, pad to square with the mean colour, 336 px, patch 14."""
    from transformers import LlavaImageProcessorPil
    return LlavaImageProcessorPil(do_pad=True, size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})


def clip_processor():
    """The plain CLIPImageProcessor path (shortest edge 336, center crop 336)."""
    from transformers import CLIPImageProcessorPil
    return CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})


def internvl_processor():
    """OpenGVLab/InternVL3-1B-hf: GotOcr2ImageProcessor 448 px tiles, 1-12 patches (+ thumbnail), 256 tokens per
    tile; the InternVLProcessor call turns crop_to_patches on."""
    from transformers import GotOcr2ImageProcessorPil, InternVLConfig, InternVLProcessor

    from tests.tiny.internvl import build_tokenizer
    from vlmflow.processors import without_video
    ip = GotOcr2ImageProcessorPil(size={"height": 448, "width": 448}, crop_to_patches=False, min_patches=1,
                                  max_patches=12)
    proc = without_video(InternVLProcessor)(image_processor=ip, tokenizer=build_tokenizer(), video_processor=None,
                                            image_seq_length=256)
    return proc, InternVLConfig()  # the config defaults are InternVL3's: 448 / 14, downsample 0.5


def qwen_processor():
    """Qwen/Qwen2-VL-7B-Instruct: min_pixels 56*56, max_pixels 28*28*16384 (preprocessor_config.json), patch 14,
    merge 2."""
    from transformers import Qwen2VLImageProcessorPil
    return Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=12845056, patch_size=14, merge_size=2,
                                    temporal_patch_size=2)


# ---------------------------------------------------------------------------------------------------------------
# oracle: pixel coverage counts

def _coverage(boxes: np.ndarray, W: int, H: int, rounding) -> np.ndarray:
    """int [H, W]: how many boxes cover each pixel, boxes rounded to integer edges by ``rounding`` (a pair of
    functions for the low and high edges), counted with a 2-D difference array."""
    lo, hi = rounding
    x0, y0 = lo(boxes[:, 0]).astype(int).clip(0, W), lo(boxes[:, 1]).astype(int).clip(0, H)
    x1, y1 = hi(boxes[:, 2]).astype(int).clip(0, W), hi(boxes[:, 3]).astype(int).clip(0, H)
    keep = (x1 > x0) & (y1 > y0)
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    diff = np.zeros((H + 1, W + 1), dtype=np.int64)
    np.add.at(diff, (y0, x0), 1)
    np.add.at(diff, (y0, x1), -1)
    np.add.at(diff, (y1, x0), -1)
    np.add.at(diff, (y1, x1), 1)
    return diff.cumsum(0).cumsum(1)[:H, :W]


INWARD = (np.ceil, np.floor)
OUTWARD = (np.floor, np.ceil)


def assert_tiles_once(geo: G.ImageGeometry, block, content=None):
    W, H = geo.image_size
    blk = geo._block(block)
    boxes = geo.boxes[blk.first_token: blk.first_token + blk.n_tokens]
    boxes = boxes[geo.valid[blk.first_token: blk.first_token + blk.n_tokens]]
    cx0, cy0, cx1, cy1 = content or geo.content
    assert (boxes[:, 0] >= cx0 - 1e-9).all() and (boxes[:, 2] <= cx1 + 1e-9).all()
    assert (boxes[:, 1] >= cy0 - 1e-9).all() and (boxes[:, 3] <= cy1 + 1e-9).all()
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum()
    assert area == pytest.approx((cx1 - cx0) * (cy1 - cy0), rel=1e-9), f"{(W, H)} block {blk.name}: areas"
    inward = _coverage(boxes, W, H, INWARD)
    assert inward.max() <= 1, f"{(W, H)} block {blk.name}: boxes overlap by more than a pixel"
    outward = _coverage(boxes, W, H, OUTWARD)
    # every whole pixel of the content is covered
    ix0, iy0, ix1, iy1 = int(np.ceil(cx0)), int(np.ceil(cy0)), int(np.floor(cx1)), int(np.floor(cy1))
    assert outward[iy0:iy1, ix0:ix1].min() >= 1, f"{(W, H)} block {blk.name}: a gap between boxes"


# ---------------------------------------------------------------------------------------------------------------
# coverage on every COCO image size

def test_llava_pad_tiles_every_coco_image_once():
    ip = llava_pad_processor()
    n_invalid = 0
    for W, H in SIZES:
        geo = G.llava_geometry((W, H), ip, patch_size=14)
        assert geo.n_tokens == 576 and geo.blocks[0][1:3] == (24, 24)
        assert geo.content == (0.0, 0.0, float(W), float(H))
        assert_tiles_once(geo, 0)
        n_invalid += int((~geo.valid).sum())
        # tokens wholly inside the padding band: the expected number of fully padded token rows/columns
        pad_px = (max(W, H) - min(W, H)) // 2 * 336 / max(W, H)
        if W != H:
            assert (~geo.valid).sum() >= 2 * 24 * int(pad_px // 14) - 24  # both bands, up to rounding
    assert n_invalid > 0  # COCO images are not square: some tokens see only padding


def test_clip_center_crop_tiles_the_central_square():
    ip = clip_processor()
    for W, H in SIZES:
        geo = G.llava_geometry((W, H), ip, patch_size=14)
        x0, y0, x1, y1 = geo.content
        side = min(W, H)
        # the central square of side min(W, H) (up to the crop's pixel rounding)
        assert x1 - x0 == pytest.approx(side, abs=2 * max(W, H) / 336) and y1 - y0 == pytest.approx(side, abs=2 * max(W, H) / 336)
        assert (x0 + x1) / 2 == pytest.approx(W / 2, abs=max(W, H) / 336)
        assert geo.valid.all()
        assert_tiles_once(geo, 0)


def test_internvl_tiles_and_thumbnail_each_tile_every_coco_image_once():
    proc, config = internvl_processor()
    seen_grids = set()
    for W, H in SIZES:
        geo = G.internvl_geometry((W, H), proc, config)
        names = [b.name for b in geo.blocks]
        n_tiles = len(names) - ("thumbnail" in names)
        assert all(b.rows == b.cols == 16 for b in geo.blocks)
        assert 1 <= n_tiles <= 12 and geo.n_tokens == 256 * len(geo.blocks)
        # the tiles together tile the image once ...
        tiles = G.ImageGeometry((W, H), geo.boxes[: 256 * n_tiles], [G.Block("tiles", 16, 16 * n_tiles, 0)])
        assert_tiles_once(tiles, 0)
        # ... and so does the thumbnail on its own
        if n_tiles > 1:
            assert names[-1] == "thumbnail"
            assert_tiles_once(geo, "thumbnail")
        seen_grids.add(geo.method)
    assert len(seen_grids) > 1  # the sample exercises several tilings


def test_qwen2_vl_tiles_every_coco_image_once():
    ip = qwen_processor()
    for W, H in SIZES:
        thw = G.qwen2_vl_grid((W, H), ip)
        geo = G.qwen2_vl_geometry((W, H), thw, ip)
        assert thw[1] % 2 == 0 and thw[2] % 2 == 0
        assert geo.n_tokens == thw[1] * thw[2] // 4
        assert_tiles_once(geo, 0)


# ---------------------------------------------------------------------------------------------------------------
# token counts against the real processors, on a sample of sizes

def _image(W, H, gradient=True):
    from PIL import Image
    if not gradient:
        return Image.new("RGB", (W, H), (255, 255, 255))
    x = (np.arange(W) + 0.5) / W * 255
    y = (np.arange(H) + 0.5) / H * 255
    arr = np.zeros((H, W, 3), dtype=np.uint8)
    arr[..., 0] = np.round(x)[None, :]
    arr[..., 1] = np.round(y)[:, None]
    return Image.fromarray(arr)


def _unnormalize(pixels: np.ndarray, ip) -> np.ndarray:
    """[..., C, h, w] normalized -> 0..255."""
    mean = np.asarray(ip.image_mean).reshape(3, 1, 1)
    std = np.asarray(ip.image_std).reshape(3, 1, 1)
    return (pixels * std + mean) * 255


def _decode_centres(patches: np.ndarray, W: int, H: int) -> np.ndarray:
    """[n, 3, h, w] pixel patches of the gradient image -> [n, 2] (x, y) they came from (mean colour)."""
    return np.stack([patches[:, 0].mean((1, 2)) / 255 * W, patches[:, 1].mean((1, 2)) / 255 * H], axis=1)


@pytest.mark.parametrize("size", SAMPLE)
def test_llava_pad_positions_match_the_real_processor(size):
    W, H = size
    ip = llava_pad_processor()
    geo = G.llava_geometry(size, ip, patch_size=14)
    px = _unnormalize(np.asarray(ip(_image(W, H), return_tensors="np")["pixel_values"][0]), ip)
    assert px.shape[-2:] == (336, 336) and geo.n_tokens == (336 // 14) ** 2  # the model's token count
    patches = px.reshape(3, 24, 14, 24, 14).transpose(1, 3, 0, 2, 4).reshape(576, 3, 14, 14)
    full = np.isclose((geo.boxes[:, 2] - geo.boxes[:, 0]) * (geo.boxes[:, 3] - geo.boxes[:, 1]),
                      (max(W, H) / 24) ** 2)
    assert full.sum() >= 24 * 8  # a third of the grid sees only image (COCO aspect ratios < 3)
    err = np.abs(_decode_centres(patches[full], W, H) - geo.box_centers()[full])
    assert err.max() < 3.0, err.max()  # tokens are ~27 px wide: an off-by-one token would be off by 27
    # and the padding: the white image's tokens are white exactly where the boxes say the image is
    white = _unnormalize(np.asarray(ip(_image(W, H, gradient=False), return_tensors="np")["pixel_values"][0]), ip)
    wpatch = white.reshape(3, 24, 14, 24, 14).transpose(1, 3, 0, 2, 4).reshape(576, 3, 14, 14)
    mean_c = np.asarray(ip.image_mean) * 255
    frac_white = ((wpatch.mean((2, 3)) - mean_c) / (255 - mean_c)).mean(1)  # share of image content per token
    frac_geo = (geo.boxes[:, 2] - geo.boxes[:, 0]) * (geo.boxes[:, 3] - geo.boxes[:, 1]) / (max(W, H) / 24) ** 2
    assert np.abs(frac_white - frac_geo).max() < 0.15


@pytest.mark.parametrize("size", SAMPLE)
def test_internvl_positions_and_counts_match_the_real_processor(size):
    W, H = size
    proc, config = internvl_processor()
    geo = G.internvl_geometry(size, proc, config)
    out = proc(images=[_image(W, H)], text=[proc.image_token], return_tensors="np")
    n_ctx = int((out["input_ids"][0] == proc.image_token_id).sum())
    assert n_ctx == geo.n_tokens  # the processor's own expansion
    px = _unnormalize(np.asarray(out["pixel_values"]), proc.image_processor)  # [n_blocks, 3, 448, 448]
    assert len(px) == len(geo.blocks)
    patches = px.reshape(-1, 3, 16, 28, 16, 28).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 3, 28, 28)
    err = np.abs(_decode_centres(patches, W, H) - geo.box_centers())
    assert err.max() < 3.0, err.max()  # tile tokens are >= 10 px apart


@pytest.mark.parametrize("size", SAMPLE)
def test_qwen2_vl_positions_and_counts_match_the_real_processor(size):
    W, H = size
    ip = qwen_processor()
    out = ip(_image(W, H), return_tensors="np")
    thw = tuple(int(v) for v in out["image_grid_thw"][0])
    assert thw == G.qwen2_vl_grid(size, ip)
    geo = G.qwen2_vl_geometry(size, out["image_grid_thw"][0], ip)
    assert geo.n_tokens == thw[1] * thw[2] // 4 == len(out["pixel_values"]) // 4
    # rows of pixel_values: patches in (h/2, w/2, 2, 2) order, each (C, T, 14, 14); token k = rows 4k..4k+3
    rows = _unnormalize(np.asarray(out["pixel_values"]).reshape(-1, 3, 2, 14, 14)[:, :, 0], ip)
    tokens = rows.reshape(-1, 4, 3, 14, 14).transpose(0, 2, 1, 3, 4).reshape(-1, 3, 4 * 14, 14)
    err = np.abs(_decode_centres(tokens, W, H) - geo.box_centers())
    assert err.max() < 3.0, err.max()


# ---------------------------------------------------------------------------------------------------------------
# ImageGeometry helpers

def test_token_at_and_heatmap_agree_with_the_boxes():
    proc, config = internvl_processor()
    W, H = SAMPLE[0]
    geo = G.internvl_geometry((W, H), proc, config)
    centres = geo.box_centers()
    for b, blk in enumerate(geo.blocks):
        for t in blk.tokens[:: max(1, blk.n_tokens // 37)]:
            assert geo.token_at(*centres[t], block=b) == t
    values = np.arange(geo.n_tokens, dtype=float)
    thumb = geo.heatmap(values, block="thumbnail")
    assert thumb.shape == (H, W) and not np.isnan(thumb).any()
    t = geo.blocks[-1].first_token + 17
    cx, cy = centres[t]
    assert thumb[int(cy), int(cx)] == t
    tile0 = geo.heatmap(values, block=0)  # one tile covers only its part of the image: NaN elsewhere
    assert np.isnan(tile0).any() and np.nanmax(tile0) == geo.blocks[0].n_tokens - 1
    with pytest.raises(G.GeometryError, match="block"):
        geo.heatmap(values[:5])
    with pytest.raises(G.GeometryError, match="covered by no token"):
        geo.token_at(W + 5, 0)


def test_llava_token_at_skips_padding_and_crop():
    geo = G.llava_geometry((640, 320), llava_pad_processor(), patch_size=14)
    # the image sits in rows 6..18 of the 24x24 grid (padding 160 px of 640 -> 84 of 336 px = 6 rows)
    assert geo.token_at(0, 0) == 6 * 24 and geo.token_at(639.9, 319.9) == 18 * 24 - 1
    crop = G.llava_geometry((640, 320), clip_processor(), patch_size=14)
    with pytest.raises(G.GeometryError, match="covered by no token"):
        crop.token_at(10, 10)  # the left border is cropped away
