"""Why does the toy Qwen2-VL not know where things are? Position answers split by axis, and M-RoPE's angles.

The toy Qwen2-VL answers "where is the COLOR SHAPE ?" far worse than the toy LLaVA (test 0.27 against 0.78, their
``eval.json``), and in clips it almost never states where an object moved (``clips.recall_by_family``, move recall
below 0.1). Qwen2-VL's vision tower has no absolute position embedding (2D rotary only), so where an image token sits
reaches the language model through M-RoPE, which rotates the query/key dimensions in three sections (time, height,
width; ``rope_parameters.mrope_section``) taken in order from the highest rotary frequency down: the width section gets
the lowest frequencies. This script measures both halves of that explanation:

- per model, position accuracy split by axis (the row word top/centre/bottom and the column word left/centre/right of
  each answer, test split, ``toy.evaluate.item_rows``): a model blind to width gets rows right and columns at chance
  (1/3);
- per M-RoPE model, the largest angle (radians) that each section's fastest frequency turns across the merged image
  grid: a section that turns far less than one radian across the image cannot tell its ends apart.

    .venv/bin/python diagnostics/position_axes.py toy toy:qwen2-vl

Measured 2026-11-30 (2-core CPU, 100 test scenes, 98 position questions; a column other than the centre is the
truth of 56% of them):

- the LLaVA toy (``toy``, learned absolute position embeddings in its vision tower): position 0.78, row 0.88,
  column 0.83; 47% of its answers name left or right;
- the shipped toy Qwen2-VL (``toy:qwen2-vl``): position 0.27, row 0.67, column 0.45; 1% of its answers name left or
  right: it says the row word ("top", "center", "bottom") and stops. Its M-RoPE (head_dim 32, theta 10000, sections
  4/6/6, 8 x 8 merged grid) turns the height section's fastest frequency 0.70 rad across the image and the width
  section's 0.022 rad: width is all but invisible to the language model's attention, so only what the vision tower
  (rotary positions only, no absolute embedding) writes into its tokens can tell left from right;
- the same model after 600 steps of the token probe's position heads (``--probe-position``; the probe then reads the
  column from the tokens, 0.90) and 3000 main steps (``runs/qwen2vl_c6/model``): position 0.32, row 0.70, column
  0.47, 3% of answers name left or right (after 878 steps: 0%): the column is in the tokens and the language model
  still does not say it;
- that model continued 3000 steps with the language model's rotary base at 20 (``--init runs/qwen2vl_c6/model
  --rope-theta 20``, ``runs/qwen2vl_c8/model``; the width section then turns 1.08 rad across the image): position
  0.52, row 0.95, column 0.53, 19% of answers name left or right: once width is visible to the language model's
  attention, it starts to say it;
- Qwen2-VL-7B's own allocation (theta 1e6, sections 16/24/24, 16 x 16 grid) is the same: height 0.47 rad, width
  0.0027 rad, so a real Qwen2-VL too must carry "left" and "right" in its vision tokens.
"""
from __future__ import annotations

import argparse

import numpy as np


def axis_accuracy(folder: str, n_scenes: int = 100) -> dict:
    """Position accuracy overall and per axis on the test split (greedy answers through the core library)."""
    import vlmflow as vf
    from vlmflow.toy.evaluate import item_rows
    from vlmflow.toy.scenes import POSITIONS, position_axes

    def axes_of(word):
        return position_axes(word) if word in POSITIONS else (None, None)

    vlm = vf.load(folder, device="cpu", dtype="float32")
    rows = item_rows(vlm, n=n_scenes, kinds=("position",), split="test", progress=False)
    truth = [axes_of(r["truth"]) for r in rows]
    said = [axes_of(r["parsed"]) for r in rows]
    return {"n": len(rows), "position": float(np.mean([r["correct"] for r in rows])),
            "row": float(np.mean([t[0] == s[0] for t, s in zip(truth, said)])),
            "column": float(np.mean([t[1] == s[1] for t, s in zip(truth, said)])),
            # how often a column other than the centre is the truth, and how often the answer names one
            "side_truth": float(np.mean([t[1] in ("left", "right") for t in truth])),
            "side_said": float(np.mean([s[1] in ("left", "right") for s in said]))}


def mrope_turns(head_dim: int, theta: float, sections: tuple[int, int, int], grid: tuple[int, int]) -> dict[str, float]:
    """The angle (rad) that each M-RoPE section's fastest frequency turns across ``grid`` (merged image tokens, rows x
    columns; the time section across one step). transformers' Qwen2-VL splits the head_dim/2 rotary frequencies,
    fastest first, into the sections (time, height, width)."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)
    starts = np.cumsum([0, *sections])
    spans = {"time": 1, "height": grid[0] - 1, "width": grid[1] - 1}
    return {axis: float(inv_freq[starts[i]] * spans[axis]) for i, axis in enumerate(spans)}


def model_mrope(folder: str) -> tuple[int, float, tuple[int, int, int]] | None:
    """(head_dim, rope_theta, mrope_section) of a model folder's text config; None without M-RoPE."""
    from transformers import AutoConfig

    text = AutoConfig.from_pretrained(folder).get_text_config()
    rope = getattr(text, "rope_parameters", None) or {}
    if not rope.get("mrope_section"):
        return None
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return head_dim, rope.get("rope_theta", 10000.0), tuple(rope["mrope_section"])


# Qwen2-VL-7B-Instruct's published text config (head_dim 3584 / 28 heads, theta 1e6, sections 16/24/24) on a 448 px
# image (16 x 16 merged tokens): the same allocation, for comparison with the toy.
QWEN2_VL_7B = (128, 1e6, (16, 24, 24))


def main() -> None:
    from vlmflow.model import toy_models

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="toy names (toy, toy:qwen2-vl) or model folders")
    parser.add_argument("--n", type=int, default=100, help="test scenes")
    parser.add_argument("--grid", type=int, nargs=2, default=(8, 8), help="merged image grid, rows columns")
    args = parser.parse_args()
    for name in args.models:
        folder = str(toy_models().get(name, name))
        acc = axis_accuracy(folder, args.n)
        print(f"{name}: {acc['n']} questions, position {acc['position']:.2f}, row {acc['row']:.2f}, "
              f"column {acc['column']:.2f}; left or right: {acc['side_truth']:.2f} of the truths, "
              f"{acc['side_said']:.2f} of the answers")
        if (mrope := model_mrope(folder)) is not None:
            turns = mrope_turns(*mrope, tuple(args.grid))
            print("  M-RoPE fastest turn across the image: " + ", ".join(f"{k} {v:.3f} rad" for k, v in turns.items()))
    turns = mrope_turns(*QWEN2_VL_7B, (16, 16))
    print("Qwen2-VL-7B, 448 px image: " + ", ".join(f"{k} {v:.4f} rad" for k, v in turns.items()))


if __name__ == "__main__":
    main()
