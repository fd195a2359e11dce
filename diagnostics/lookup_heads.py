"""Does a toy find an object by its shape? The lookup head at the answer position of "what color is the SHAPE ?".

To answer, the position that predicts the colour must read the image tokens of the object the question names, not
the others. For each model this records, with ``vf.Record("last_prompt", heads="all")`` (the library's own attention
function), the attention of that position in every layer and head on the image tokens, and through the adapter's
``geometry`` and ``localize.masks.MaskTokens`` (coverage-weighted, as the localization pages measure it) splits it
into the asked object's share and the mean share of each other object in the scene (val split, scenes with 2+
objects and a shape that occurs once). Per layer it prints the head with the largest target-minus-other difference
and the head averages, plus the model's colour accuracy on the same questions (greedy).

    .venv/bin/python diagnostics/lookup_heads.py toy toy:qwen2-vl runs/qwen2vl_v3/model runs/internvl_v3/model

Measured 2026-11-29 (2-core CPU; the first 40 val scenes give 26 questions; "a vs b": the best head's share on the
asked object vs on another object; colour accuracy on these multi-object questions):

- the LLaVA toy (``toy``), accuracy 1.00: sharp lookup heads in most layers (layer 3: 0.338 vs 0.011; layer 4: 0.356
  vs 0.002; layer 6: 0.360 vs 0.003);
- the toy Qwen2-VL's 9000-step recipe run, 0.50: none (best 0.187 vs 0.085, layer 7; elsewhere at most 1.4x);
- the shipped toy Qwen2-VL (that run continued, ``DEVELOPING.md``), 0.69: one sharp head (layer 2 head 0: 0.137 vs
  0.001), the others 1.5-3x; its test colour accuracy of 0.867 counts single-object scenes, which need no lookup;
- the toy InternVL's recipe run, 0.54: a partial head (layer 3 head 3: 0.213 vs 0.062), nothing sharper.

Measured 2026-11-30 (fourth session): the toy InternVL trained with the question probe (``toy:internvl``, v13),
1.00: sharp lookup heads in layers 1-2 (layer 1 head 2: 0.365 vs 0.002; layer 2 head 3: 0.359 vs 0.021), as the LLaVA
toy's; the model it replaced (v8) and ``internvl_v9`` had none (best 0.203 vs 0.079).
"""
from __future__ import annotations

import argparse

import numpy as np


def lookup_attention(folder: str, n_scenes: int = 40) -> dict:
    """{'target': float[L, H], 'other': float[L, H], 'accuracy': float, 'n': int}: mean attention share of the
    last prompt position on the asked object's image tokens and on each other object's (mean over other objects)."""
    import vlmflow as vf
    from vlmflow.localize.masks import MaskTokens
    from vlmflow.toy.questions import color_questions
    from vlmflow.toy.scenes import make_scene

    vlm = vf.load(folder, device="cpu", dtype="float32")
    target, other, correct = [], [], []
    for i in range(n_scenes):
        scene = make_scene(0, "val", i)
        questions = color_questions(scene)
        if not questions or len(scene.objects) < 2:
            continue
        qa = questions[0]
        shape = qa.question.split()[-2]
        gen = vlm.generate(scene.image, qa.question, record=vf.Record("last_prompt", heads="all"), max_new_tokens=1)
        image_map = gen.record.image_map[0].float().numpy()  # [L, H, N_img]
        image_map = image_map / image_map.sum(-1, keepdims=True)  # shares of the attention on the image
        cover = {id(o): MaskTokens.build(o.mask, gen.geometry).coverage for o in scene.objects}
        asked = next(o for o in scene.objects if o.object.shape == shape)
        target.append(image_map @ cover[id(asked)])
        other.append(np.mean([image_map @ cover[id(o)] for o in scene.objects if o is not asked], axis=0))
        correct.append(gen.text.strip() == qa.answer)
    return {"target": np.mean(target, 0), "other": np.mean(other, 0), "accuracy": float(np.mean(correct)),
            "n": len(target)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="model folders or toy names (toy, toy:qwen2-vl, ...)")
    parser.add_argument("--scenes", type=int, default=40, help="val scenes to draw questions from (default 40)")
    args = parser.parse_args()
    for folder in args.folders:
        r = lookup_attention(folder, args.scenes)
        print(f"{folder}: {r['n']} colour questions, accuracy {r['accuracy']:.2f}; share of the image attention on "
              f"the asked object vs another object")
        for layer, (t, o) in enumerate(zip(r["target"], r["other"])):
            h = int(np.argmax(t - o))
            print(f"  layer {layer}: best head {h}: {t[h]:.3f} vs {o[h]:.3f} | head mean {t.mean():.3f} vs {o.mean():.3f}")


if __name__ == "__main__":
    main()
