"""What the plant changes in re-prompting's answer turn, on the shipped planted toy models.

``vlmflow.reprompt.answer`` decodes inside ``VLM.active`` with the compressed cache's per-layer roles, so a planted
model's plant applies to the question and answer rows (see ``vlmflow.reprompt``: Roles in the answer turn). This
script re-prompts toy test scenes (yes/no, count and colour questions) from the same planted describe run twice: with
the plant in the answer turn (the library) and with it left out (the bare weights answering on the planted cache,
what an answer turn outside the attention state would give), and prints per context the share of answers whose
text differs and the first-word accuracy of each.

    .venv/bin/python diagnostics/reprompt_plant_effect.py --scenes 20

Measured 2026-11-29 on the 2-core CPU (20 scenes with 3 objects, 141 questions per context, 3 min):
toy:compress: context 0.000 of answers differ (accuracy 0.929 both ways), query 0.000 (0.518), query+topk@5 0.050
(0.695 both), topk@5 0.064 (0.617 both); toy:window: context 0.113 (0.894 with the plant, 0.872 without), query
0.000 (0.433), query+topk@5 0.028 (0.794 / 0.801), topk@5 0.078 (0.809 / 0.801). Under ``image:generated@all`` the
question's rows (text) read the kept image tokens either way, so the first answer token, which the score reads,
rarely changes; "query" keeps no image token, so there is nothing for either plant to block.
"""
from __future__ import annotations

import argparse
import dataclasses


def main(argv=None) -> None:
    import torch
    from tqdm import tqdm

    import vlmflow as vf
    from vlmflow import reprompt as R
    from vlmflow.toy.questions import scene_questions
    from vlmflow.toy.scenes import make_scene

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["toy:compress", "toy:window"])
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    contexts = (("context", None), ("query", None), ("query+topk", 5.0), ("topk", 5.0))
    for name in args.models:
        vlm, bare = vf.load(name), vf.load(name, plant=False)
        counts = {c: [0, 0, 0, 0] for c, _ in contexts}  # questions, differing answers, correct planted / left out
        for i in tqdm(range(args.scenes), desc=name):
            scene = make_scene(args.objects, "test", i)
            run = R.describe(vlm, scene.image, max_new_tokens=48)
            loose = dataclasses.replace(run, vlm=bare)
            qas = [qa for qa in scene_questions(scene) if qa.kind in ("exists", "count", "color")]
            for cname, k in contexts:
                ctx = R.compress(run, cname, k_percent=k or 0)
                for qa in qas:
                    a = R.answer(ctx, qa.question).text
                    b = R.answer(dataclasses.replace(ctx, run=loose), qa.question).text
                    c = counts[cname]
                    c[0] += 1
                    c[1] += a != b
                    c[2] += a.split(" ")[0] == qa.answer
                    c[3] += b.split(" ")[0] == qa.answer
        for (cname, k), (n, d, ca, cb) in zip(contexts, counts.values()):
            label = cname if k is None else f"{cname}@{k:g}"
            print(f"{name} {label:13s} n={n} differ={d / n:.3f} acc_planted={ca / n:.3f} "
                  f"acc_plant_left_out={cb / n:.3f}")


if __name__ == "__main__":
    main()
