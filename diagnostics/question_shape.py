"""Does a toy's yes/no answer read the shape word of its question? "is there a C S ?" on one-object scenes.

With one object in the scene no lookup is needed: the answer only has to compare the question's colour and shape
with the object's. For each model this asks every one-object val scene three questions, with the object's own colour
and shape, with the shape swapped, and with the colour swapped, and gives (a) the yes-minus-no logit at the answer
position (``VLM.forward``) and (b) per layer, the largest share over heads of the image attention that falls on the
object (``vf.Record(("query", "last_prompt"), heads="all")``, coverage-weighted through ``localize.masks.MaskTokens``
as the localization pages measure it) at the colour word, the shape word and the last prompt position, with the
true shape and with the swapped one. A model that reads the shape word answers differently, and attends
differently after it, when the shape is swapped.

    .venv/bin/python diagnostics/question_shape.py toy toy:qwen2-vl runs/internvl_v6/model

Measured 2026-11-30 (16 one-object val scenes; margins true / shape swapped / colour swapped; "a/b": attention
share with the true / the swapped shape):

- the LLaVA toy (``toy``): +11.17 / -11.13 / -12.22; the shape word finds the object in layer 0 (0.14/0.08), and
  the last position's attention on the object depends on the shape in every layer from 2 on (layer 2: 0.22/0.06,
  layer 4: 0.29/0.10, layer 6: 0.25/0.08);
- the toy Qwen2-VL (``toy:qwen2-vl``): +3.05 / -3.63 / -4.65 (12% of the shape-swapped questions answered yes); its
  shape word finds the object in layers 0-1 (0.34/0.21, 0.31/0.25) and the last position barely depends on the
  shape (layer 4: 0.07/0.04): what the shape word found reaches the answer through the shape word's own state;
- the toy InternVL ``internvl_v6`` (``DEVELOPING.md``): +0.26 / **+0.26** / -0.78: swapping the shape changes
  nothing and every shape-swapped question is answered yes. Its shape word hardly finds the object (layer 0:
  0.19/0.16) and the last position's attention is the same to two decimals with either shape in every layer.

What the answer position reads of the question itself (head-max attention of the last position on the word, per
layer; measured 2026-11-30, third session): the LLaVA toy reads the shape word with one layer-0 head at 1.00 and the
colour word at 0.46-0.74 in layers 2-6; the toy Qwen2-VL reads the shape word at 0.41 (layer 0) and 0.25 (layer 2),
the colour word at 0.57 (layer 1). The shipped toy InternVL (``toy:internvl``, v8) reads the colour word at 0.70 and
0.97 (layers 5, 7) and the shape word at no more than 0.04 in any layer; ``internvl_v11`` at step ~3100 (from
scratch, ``--probe-scale 10``) reads neither (<= 0.08) and its margin is +1.12 with the true shape and +1.12 with a
swapped one, although its shape word finds the object in layer 0 (0.17 true / 0.07 swapped). The shape word gathers
the match; no later position reads it.

After the question probe (``--probe-question 1``, fourth session, ``DEVELOPING.md``), the toy InternVL that replaced
v8 (``toy:internvl``, ``internvl_v13``): margins +3.80 / -3.98 / -4.06, every question answered right; the last
position reads the shape word with a layer-0 head at 0.84, and its attention on the object depends on the shape in
layers 1-2 (0.30/0.15, 0.22/0.09).
"""
from __future__ import annotations

import argparse

import numpy as np

POSITIONS = ("colour word", "shape word", "last")


def shape_reading(folder: str, n_scenes: int = 16) -> dict:
    """{'margin': float[3] (true, shape swapped, colour swapped), 'yes': float[3] (share answered yes),
    'share': {(variant, position): float[L]} (head-max attention share on the object), 'n': int}."""
    import vlmflow as vf
    from vlmflow.localize.masks import MaskTokens
    from vlmflow.toy.scenes import COLORS, SHAPES, SceneConfig, make_scene

    vlm = vf.load(folder, device="cpu", dtype="float32")
    tok = vlm.processor.tokenizer
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    margins, share = [], {}
    one = SceneConfig(min_objects=1, max_objects=1)
    for i in range(n_scenes):
        scene = make_scene(0, "val", i, one)
        (obj,) = scene.objects
        o = obj.object
        shape = [s for s in SHAPES if s != o.shape][i % (len(SHAPES) - 1)]
        colour = [c for c in COLORS if c != o.color][i % (len(COLORS) - 1)]
        questions = {"true": (o.color, o.shape), "swapped": (o.color, shape), "colour": (colour, o.shape)}
        batch = vlm.prepare([scene.image] * 3, [f"is there a {c} {s} ?" for c, s in questions.values()])
        logits = vlm.forward(batch).logits[:, -1]
        margins.append((logits[:, yes] - logits[:, no]).tolist())
        for variant in ("true", "swapped"):
            c, s = questions[variant]
            gen = vlm.generate(scene.image, f"is there a {c} {s} ?", max_new_tokens=1,
                               record=vf.Record(("query", "last_prompt"), heads="all"))
            rec = gen.record
            image_map = rec.image_map.float().numpy()  # [R, L, H, N_img]
            image_map = image_map / image_map.sum(-1, keepdims=True).clip(1e-12)
            on_object = image_map @ MaskTokens.build(obj.mask, gen.geometry).coverage  # [R, L, H]
            ids = rec.row_token_ids.tolist()
            rows = {"colour word": ids.index(tok.convert_tokens_to_ids(c)),
                    "shape word": ids.index(tok.convert_tokens_to_ids(s)), "last": len(ids) - 1}
            for name, r in rows.items():
                share.setdefault((variant, name), []).append(on_object[r].max(-1))
    m = np.array(margins)
    return {"margin": m.mean(0), "yes": (m > 0).mean(0), "n": n_scenes,
            "share": {k: np.mean(v, 0) for k, v in share.items()}}


def answer_reads_words(folder: str, n_scenes: int = 16) -> dict[str, np.ndarray]:
    """{'colour word' | 'shape word': float[L]}: per layer, the largest attention over heads that the last prompt
    position (where the answer is read out) pays to that word of "is there a C S ?" (the object's own words), from
    transformers' eager attention, so the weights are the model's own and not the library's record."""
    import torch

    import vlmflow as vf
    from vlmflow.toy.scenes import SceneConfig, make_scene

    vlm = vf.load(folder, device="cpu", dtype="float32")
    vlm.model.set_attn_implementation("eager")
    tok = vlm.processor.tokenizer
    one = SceneConfig(min_objects=1, max_objects=1)
    reads: dict[str, list] = {"colour word": [], "shape word": []}
    for i in range(n_scenes):
        scene = make_scene(0, "val", i, one)
        o = scene.objects[0].object
        batch = vlm.prepare(scene.image, f"is there a {o.color} {o.shape} ?")
        with torch.no_grad():
            attentions = vlm.model(**batch.inputs, output_attentions=True).attentions  # L x [1, H, T, T]
        ids = batch.inputs["input_ids"][0].tolist()
        for name, word in (("colour word", o.color), ("shape word", o.shape)):
            at = ids.index(tok.convert_tokens_to_ids(word))
            reads[name].append([float(a[0, :, -1, at].max()) for a in attentions])
    return {k: np.mean(v, 0) for k, v in reads.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="model folders or toy names (toy, toy:qwen2-vl, ...)")
    parser.add_argument("--scenes", type=int, default=16, help="one-object val scenes (default 16)")
    args = parser.parse_args()
    for folder in args.folders:
        r = shape_reading(folder, args.scenes)
        print(f"{folder}: {r['n']} one-object scenes; yes-no logit margin true {r['margin'][0]:+.2f}, shape swapped "
              f"{r['margin'][1]:+.2f}, colour swapped {r['margin'][2]:+.2f}; answered yes {r['yes'][0]:.2f} / "
              f"{r['yes'][1]:.2f} / {r['yes'][2]:.2f}")
        print("  head-max share of the image attention on the object, true / swapped shape, per layer:")
        for name in POSITIONS:
            t, s = r["share"][("true", name)], r["share"][("swapped", name)]
            print(f"  {name:<12} " + " ".join(f"L{i}: {a:.2f}/{b:.2f}" for i, (a, b) in enumerate(zip(t, s))))
        print("  head-max attention of the last position on the question's words, per layer:")
        for name, share in answer_reads_words(folder, args.scenes).items():
            print(f"  {name:<12} " + " ".join(f"L{i}: {a:.2f}" for i, a in enumerate(share)))


if __name__ == "__main__":
    main()
