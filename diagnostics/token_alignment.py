"""How close does each image token lie to the words that name its object? The token probe's cosine, per head.

A question word finds its object's image tokens by similarity (``train.mimetic_init``): the token probe of stage 1
(``toy/probe.py``) turns each token toward the embeddings of its object's shape, colour and size words, and keeps it
there in stage 2 (``--aux-weight``). The probe's accuracy does not show how strongly: its learned scale makes a small
margin enough for the argmax. This prints ``TokenProbe.object_token_cosine`` and ``object_token_margin`` (the
cosine with the own word minus the mean cosine with the head's other words; both recorded in training.json's
``vision_pretraining`` after stage 1) for exported models: the image tokens as the language model receives them
(the architecture's projector tap), on val scenes.

    .venv/bin/python diagnostics/token_alignment.py toy toy:qwen2-vl runs/internvl_v6/model

Measured 2026-11-30 (32 val scenes; cosine / margin for shape, colour, size):

- the LLaVA toy (``toy``): 0.384 / 0.405, 0.243 / 0.275, 0.101 / 0.214;
- the toy Qwen2-VL (``toy:qwen2-vl``, ``qwen2vl_e6``): 0.379 / 0.449, 0.354 / 0.384, 0.323 / 0.378;
- the toy InternVL ``internvl_v6`` (``DEVELOPING.md``): **0.149 / 0.220**, 0.300 / 0.331, 0.216 / 0.281. It left
  stage 1 at a shape cosine of 0.52 and lost two thirds of it in the main stage, with the probe still on (weight
  1.0, learned scale). The shape margin is half the other toys'; this is the toy that never learned to find an
  object by its shape (it answers "is there a red square?" by whether red is in the scene, 0 of the shape-swapped
  negatives right even with one object in the scene; ``diagnostics/question_shape.py``). The 9000-step recipe run
  ``internvl_v3`` measured 0.100 for the shape cosine.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def token_cosine(folder: str, n_scenes: int = 32) -> tuple[dict[str, float], dict[str, float]]:
    """({head: mean cosine of an object's image tokens with the word naming it}, {head: that cosine's margin over
    the head's other words}) for an exported toy model folder."""
    import numpy as np
    import torch
    from transformers import AutoModelForImageTextToText

    from vlmflow.model import is_toy_name, toy_model_folder
    from vlmflow.processors import load_processor
    from vlmflow.toy.architectures import get_arch
    from vlmflow.toy.model import ToyModelConfig
    from vlmflow.toy.probe import TokenProbe, token_targets
    from vlmflow.toy.scenes import make_scene

    folder = toy_model_folder(folder) if is_toy_name(folder) else Path(folder)
    train = json.loads((folder / "training.json").read_text())
    arch = get_arch(train["train_config"].get("arch", "llava"))
    grid = ToyModelConfig(**train["model_config"]).grid
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32, local_files_only=True).eval()
    processor = load_processor(folder, local_files_only=True)
    probe = TokenProbe(model, processor.tokenizer)
    tap = arch.tap(model, grid ** 2)
    scenes = [make_scene(0, "val", i) for i in range(n_scenes)]
    with torch.no_grad():
        arch.image_features(model, arch.image_inputs(processor, [s.image for s in scenes]))
        features = tap.take()
    tap.remove()
    targets = torch.from_numpy(np.stack([token_targets(s, grid) for s in scenes]))
    return probe.object_token_cosine(features, targets), probe.object_token_margin(features, targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="model folders or toy names (toy, toy:qwen2-vl, ...)")
    parser.add_argument("--scenes", type=int, default=32, help="val scenes (default 32)")
    args = parser.parse_args()
    for folder in args.folders:
        cos, margin = token_cosine(folder, args.scenes)
        print(f"{folder}: cosine / margin " + ", ".join(f"{head} {c:.3f} / {margin[head]:.3f}"
                                                        for head, c in cos.items()))


if __name__ == "__main__":
    main()
