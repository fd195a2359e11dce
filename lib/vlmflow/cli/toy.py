"""`vlmflow toy scenes|train|eval`: the toy world from the command line (see ``vlmflow.toy``).

    vlmflow toy scenes --seed 0 --n 100 --out DIR [--split test] [--min-objects 1 --max-objects 4] [--clutter 0.5]
    vlmflow toy train --out data/toy_model [--vision-minutes 6] [--minutes 80] [--steps N] [--seed 0] [--resume]
    vlmflow toy eval --model data/toy_model --n 200 [--knockout] --json
"""
from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("toy", help="toy world: synthetic scenes, the toy model's training and evaluation")
    sub = p.add_subparsers(dest="toy_command", required=True, metavar="ACTION")

    s = sub.add_parser("scenes", help="write toy scenes as COCO (DIR/instances.json + DIR/images/)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--split", default="test", choices=["train", "val", "test"])
    s.add_argument("--min-objects", type=int, default=1)
    s.add_argument("--max-objects", type=int, default=4)
    s.add_argument("--clutter", type=float, default=0.0, help="0 (plain) .. 1 (grey strokes + pixel noise)")
    s.add_argument("--image-size", type=int, default=128)
    s.set_defaults(func=_scenes)

    t = sub.add_parser("train", help="train the toy model from scratch (checkpoints, --resume)")
    t.add_argument("--out", required=True, help="folder for the exported (fp16) model and processor")
    t.add_argument("--work", default=None, help="checkpoint folder (default: runs/toy_train)")
    t.add_argument("--minutes", type=float, default=80.0, help="wall-clock budget of the main stage in this invocation")
    t.add_argument("--steps", type=int, default=None, help="schedule length (default: estimated from --minutes)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--vision-minutes", type=float, default=6.0,
                   help="stage 1: token-probe pretraining of the vision tower + projector before --minutes (0: skip)")
    t.add_argument("--aux-weight", type=float, default=0.3, help="token-probe loss weight in the main stage")
    t.add_argument("--hide-until", type=float, default=0.4,
                   help="context curriculum: hide system prompt + background image tokens early, off from this "
                        "fraction of the schedule on (0: off)")
    t.add_argument("--mimetic", action=argparse.BooleanOptionalAction, default=True,
                   help="mimetic initialisation of the LM's attention (W_k = W_q)")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--vision-layers", type=int, default=None, help="CLIP tower depth (default: ToyModelConfig)")
    t.add_argument("--vision-feature-layer", type=int, default=None,
                   help="hidden state of the CLIP tower fed to the projector (default: ToyModelConfig)")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a toy model on held-out test scenes")
    e.add_argument("--model", default="toy")
    e.add_argument("--n", type=int, default=200)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--knockout", action="store_true", help="also evaluate with the full image knockout")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--json", action="store_true")
    e.add_argument("--card", action="store_true", help="write MODEL_CARD.md and eval.json into the model folder")
    e.add_argument("--train-command", default=None, help="training command to record in the card "
                   "(default: from training.json)")
    e.set_defaults(func=_eval)


def _scenes(args) -> int:
    from vlmflow.toy.scenes import SceneConfig, write_coco

    cfg = SceneConfig.for_objects(args.min_objects, args.max_objects, image_size=args.image_size,
                                  clutter=args.clutter)
    path = write_coco(args.out, args.seed, args.n, split=args.split, config=cfg)
    print(path)
    return 0


def _train(args) -> int:
    from dataclasses import replace

    from vlmflow.toy.model import ToyModelConfig
    from vlmflow.toy.train import TrainConfig, train

    model_overrides = {k: v for k, v in (("vision_layers", args.vision_layers),
                                         ("vision_feature_layer", args.vision_feature_layer)) if v is not None}
    cfg = TrainConfig(seed=args.seed, batch_size=args.batch_size, lr=args.lr, steps=args.steps,
                      minutes=args.minutes, threads=args.threads, vision_minutes=args.vision_minutes,
                      aux_weight=args.aux_weight, hide_until=args.hide_until, mimetic=args.mimetic,
                      model=replace(ToyModelConfig(), **model_overrides))
    command = "vlmflow toy train " + " ".join(_argv_after("train"))
    train(cfg, args.out, args.work or "runs/toy_train", resume=args.resume, log=lambda m: print(m, flush=True),
          command=command)
    return 0


def _argv_after(word: str) -> list[str]:
    import sys

    argv = sys.argv[1:]
    return argv[argv.index(word) + 1:] if word in argv else argv


def _recorded_command(model_dir: str) -> str:
    from pathlib import Path

    p = Path(model_dir) / "training.json"
    if p.exists():
        return json.loads(p.read_text()).get("command", "?")
    return "?"


def _eval(args) -> int:
    import torch

    from vlmflow.model import load, toy_model_path
    from vlmflow.toy.evaluate import evaluate_all, write_model_card

    torch.set_num_threads(args.threads)
    vlm = load(args.model, dtype="float32")
    res = evaluate_all(vlm, n=args.n, seed=args.seed, split=args.split, knockout=args.knockout)
    if args.card:
        model_dir = str(toy_model_path()) if args.model == "toy" else args.model
        command = args.train_command or _recorded_command(model_dir)
        print(write_model_card(model_dir, res, command))
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        for cond, metrics in res["metrics"].items():
            print(cond, " ".join(f"{k}={v}" for k, v in metrics.items()))
    return 0
