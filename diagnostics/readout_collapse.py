"""Why some toy runs never learn yes/no: the tied embedding rows of ``yes`` and ``no`` collapse onto each other.

For each model folder this prints the cosine between the ``yes`` and ``no`` rows of the (tied) embedding, the norm
of their difference, and, teacher-forced on balanced pairs of held-out ``is there a ... ?`` questions (val split),
the accuracy of ``logit(yes) > logit(no)`` and the mean absolute logit difference at the answer position.

    .venv/bin/python diagnostics/readout_collapse.py data/toy_model runs/internvl/work/latest --arch llava internvl

While the answer position's state ``h`` carries nothing about the label, balanced cross-entropy is lowest with equal
logits for every ``h``, so training pulls ``e_yes - e_no`` toward zero along the states; the gradient the yes/no
loss sends into the network is ``(p_yes - y) (e_yes - e_no)``, so it dies with the difference
(``toy.train.FixedRows`` keeps the two rows at their random start).

Measured 2026-11-29 (2-core CPU; 16 scenes x 2 questions): the shipped LLaVA toy, cosine 0.45 and accuracy 1.0;
the recipe study's LLaVA models (``runs/recipes/*/model``, 30 CPU minutes each) that left chance, cosine 0.75-0.91;
every run that stayed at exactly 0.5 through training, cosine 1.00: the study's ``no-mimetic`` recipe (LLaVA), both
toy InternVL runs (steps 3089 and ~5800) and the toy Qwen2-VL run (step ~2000); the InternVL run at step 3089 gives
logit differences of 0.002-0.03 whatever the image or the question. Retrained from scratch with ``--fixed-words
yes,no`` (rows at cosine 0.07 / -0.13 throughout), both left chance (greedy val yes/no): InternVL 0.75 from step 1334
(0.77 at 2314), Qwen2-VL 0.73 from step 1734 (0.77 at 2404).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch


def readout(folder: str, arch: str, n_scenes: int = 16) -> dict:
    from transformers import AutoModelForImageTextToText

    from vlmflow.processors import load_processor
    from vlmflow.toy.architectures import get_arch
    from vlmflow.toy.questions import exists_pair
    from vlmflow.toy.scenes import make_scene
    from vlmflow.toy.train import Batcher

    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32, local_files_only=True).eval()
    processor = load_processor(folder, local_files_only=True)
    yes, no = processor.tokenizer.convert_tokens_to_ids(["yes", "no"])
    rows = model.get_output_embeddings().weight.detach()
    batcher = Batcher(processor, get_arch(arch), model)
    rng = np.random.default_rng(0)
    correct, margins = [], []
    for i in range(n_scenes):
        scene = make_scene(0, "val", i)
        for qa in exists_pair(scene, rng):
            batch = batcher([scene.image], [qa])
            batch.pop("labels")
            answer_at = len(batcher.prompt_ids(qa.question)) - 1
            with torch.no_grad():
                logits = model(**batch).logits[0, answer_at]
            margin = float(logits[yes] - logits[no])
            correct.append((margin > 0) == (qa.answer == "yes"))
            margins.append(abs(margin))
    return {"cosine": float(torch.nn.functional.cosine_similarity(rows[yes], rows[no], dim=0)),
            "difference_norm": float((rows[yes] - rows[no]).norm()),
            "teacher_forced_accuracy": float(np.mean(correct)), "mean_abs_logit_difference": float(np.mean(margins))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", help="exported toy model folders")
    ap.add_argument("--arch", nargs="+", default=None, help="each folder's toy architecture (default: llava)")
    ap.add_argument("--scenes", type=int, default=16)
    args = ap.parse_args()
    arches = args.arch or ["llava"] * len(args.folders)
    if len(arches) != len(args.folders):
        ap.error(f"{len(args.folders)} folders but {len(arches)} architectures")
    for folder, arch in zip(args.folders, arches):
        r = readout(folder, arch, args.scenes)
        print(f"{folder} ({arch}): cosine(yes, no) {r['cosine']:.2f}, |e_yes - e_no| {r['difference_norm']:.3f}, "
              f"teacher-forced yes/no accuracy {r['teacher_forced_accuracy']:.2f}, mean |logit difference| "
              f"{r['mean_abs_logit_difference']:.3f}", flush=True)


if __name__ == "__main__":
    main()
