"""`vlmflow toy scenes|clips|train|eval`: the toy world from the command line (see ``vlmflow.toy``).

    vlmflow toy scenes --seed 0 --n 100 --out DIR [--split test] [--min-objects 1 --max-objects 4] [--clutter 0.5]
    vlmflow toy clips --seed 0 --n 50 --out DIR [--split test] [--min-frames 2 --max-frames 4]
    vlmflow toy train --out data/toy_model [--arch llava|internvl|qwen2-vl] [--vision-minutes 6] [--minutes 80] [--steps N] [--seed 0] [--resume]
    vlmflow toy eval --model data/toy_model --n 200 [--knockout] --json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlmflow.cli import common


def register(subparsers) -> None:
    p = subparsers.add_parser("toy",
                              help="The toy world: synthetic scenes, and the toy model's training and evaluation.",
                              description="The toy world: synthetic scenes with exact ground truth written as COCO, "
                                          "and the training and evaluation of the small toy model.")
    sub = p.add_subparsers(dest="toy_command", required=True, metavar="ACTION")

    s = sub.add_parser("scenes", help="Write toy scenes as COCO (DIR/instances.json and DIR/images/).",
                       description="Write N toy scenes as a COCO data set: DIR/instances.json with the objects' "
                                   "boxes, masks, colours and sizes, and one PNG per scene in DIR/images/.")
    _add_world_options(s, "scenes", "scene")
    common.add_json_option(s, "the instances.json path, the number of scenes and the split")
    s.set_defaults(func=_scenes)

    c = sub.add_parser("clips", help="Write toy video clips as COCO (DIR/instances.json and DIR/frames/).",
                       description="Write N toy video clips of 2-4 frames in which objects appear, disappear, move "
                                   "or change colour: DIR/instances.json with every frame's objects (masks, boxes, "
                                   "track ids, frame indices), the events, captions and questions of each clip, and "
                                   "one PNG per frame in DIR/frames/.")
    _add_world_options(c, "clips", "frame")
    c.add_argument("--min-frames", type=common.positive_int, default=2,
                   help="The fewest frames in a clip (at least 2). Default: 2.")
    c.add_argument("--max-frames", type=common.positive_int, default=4,
                   help="The most frames in a clip. Default: 4.")
    common.add_json_option(c, "the instances.json path, the number of clips and the split")
    c.set_defaults(func=_clips)

    t = sub.add_parser("train", help="Train the toy model from scratch (with checkpoints and --resume).",
                       description="Train the toy model from scratch: stage 1 pretrains the vision tower and "
                                   "projector with a token probe, stage 2 trains everything on the toy questions; "
                                   "checkpoints go to --work and the exported model to --out.")
    t.add_argument("--out", required=True, help="The folder for the exported (float16) model and processor.")
    t.add_argument("--work", default=None, help="The checkpoint folder. Default: runs/toy_train.")
    t.add_argument("--minutes", type=common.positive_float, default=80.0,
                   help="The wall-clock budget of the main stage in this invocation, in minutes. Default: 80.")
    t.add_argument("--steps", type=common.positive_int, default=None,
                   help="The length of the training schedule in steps. Default: estimated from --minutes.")
    t.add_argument("--seed", type=common.nonnegative_int, default=0, help="The training seed. Default: 0.")
    t.add_argument("--batch-size", type=common.positive_int, default=32, help="Scenes per step. Default: 32.")
    t.add_argument("--lr", type=common.positive_float, default=1e-3, help="The peak learning rate. Default: 0.001.")
    t.add_argument("--vision-minutes", type=common.nonnegative_float, default=6.0,
                   help="Minutes of stage 1 (token-probe pretraining of the vision tower and projector) before the "
                        "main stage; 0 skips it. Default: 6.")
    t.add_argument("--aux-weight", type=common.nonnegative_float, default=0.3,
                   help="The weight of the token-probe loss in the main stage. Default: 0.3.")
    t.add_argument("--hide-until", type=common.fraction, default=0.4,
                   help="Context curriculum: the system prompt and background image tokens are hidden early on, "
                        "less and less until this fraction of the schedule; 0 turns it off. Default: 0.4.")
    t.add_argument("--mimetic", action=argparse.BooleanOptionalAction, default=True,
                   help="Start the language model's attention from a mimetic initialisation (W_k = W_q). "
                        "Default: on.")
    t.add_argument("--threads", type=common.positive_int, default=2, help="CPU threads for torch. Default: 2.")
    t.add_argument("--resume", action="store_true", help="Continue from the last checkpoint in --work.")
    t.add_argument("--arch", default="llava", choices=["llava", "internvl", "qwen2-vl"],
                   help="The toy's architecture, built from transformers' own classes: llava (CLIP tower, MLP "
                        "projector, Llama), internvl (pixel shuffle, Qwen2) or qwen2-vl (2x2 patch merger, M-RoPE). "
                        "Default: llava.")
    t.add_argument("--clips", type=common.fraction, default=0.0,
                   help="The share of main-stage steps that train on toy video clips through Qwen2-VL's video "
                        "input (--arch qwen2-vl only); 0 trains on still scenes only. Default: 0.")
    t.add_argument("--vision-layers", type=common.positive_int, default=None,
                   help="The depth of the CLIP vision tower. Default: ToyModelConfig's.")
    t.add_argument("--vision-feature-layer", type=int, default=None,
                   help="Which hidden state of the vision tower feeds the projector. Default: ToyModelConfig's.")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="Evaluate a toy model on held-out test scenes.",
                       description="Evaluate a toy model on fresh scenes: description F1 and the accuracy of each "
                                   "question kind, optionally also under the full image knockout.")
    e.add_argument("--model", default="toy",
                   help="The toy model: 'toy' (the shipped one, or $VLMFLOW_TOY_MODEL) or a model folder. Default: toy.")
    e.add_argument("--n", type=common.positive_int, default=200,
                   help="How many scenes to evaluate on (at least 1). Default: 200.")
    e.add_argument("--seed", type=common.nonnegative_int, default=0,
                   help="The seed of the evaluation scenes. Default: 0.")
    e.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="Which split's scenes. Default: test.")
    e.add_argument("--knockout", action="store_true", help="Also evaluate with the full image knockout.")
    e.add_argument("--clips", type=common.nonnegative_int, default=0,
                   help="Also describe this many held-out toy clips through the video input and report their fact "
                        "F1 and count-at-end accuracy (Qwen2-VL toys only). Default: 0 (no clips).")
    e.add_argument("--threads", type=common.positive_int, default=2, help="CPU threads for torch. Default: 2.")
    common.add_json_option(e, "the metrics")
    e.add_argument("--card", action="store_true", help="Write MODEL_CARD.md and eval.json into the model folder.")
    e.add_argument("--train-command", default=None,
                   help="The training command to record in the card. Default: the one in training.json.")
    e.set_defaults(func=_eval)


def _add_world_options(p, items: str, unit: str) -> None:
    """The options that ``scenes`` and ``clips`` share: what to draw and where to write it."""
    p.add_argument("--seed", type=common.nonnegative_int, default=0,
                   help=f"The seed the {items} are drawn from. Default: 0.")
    p.add_argument("--n", type=common.positive_int, required=True, help=f"How many {items} to write (at least 1).")
    p.add_argument("--out", required=True, help="The folder to write (created if needed).")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="Which split's streams (disjoint per split). Default: test.")
    p.add_argument("--min-objects", type=common.nonnegative_int, default=1,
                   help=f"The fewest objects in a {unit}. Default: 1.")
    p.add_argument("--max-objects", type=common.positive_int, default=4,
                   help=f"The most objects in a {unit}. Default: 4.")
    p.add_argument("--clutter", type=common.fraction, default=0.0,
                   help="Background clutter from 0 (plain) to 1 (grey strokes and pixel noise). Default: 0.")
    p.add_argument("--image-size", type=common.positive_int, default=128,
                   help="The side of the square images in pixels. Default: 128.")


def _scene_config(args):
    from vlmflow.toy.scenes import SceneConfig

    return SceneConfig.for_objects(args.min_objects, args.max_objects, image_size=args.image_size,
                                   clutter=args.clutter)


def _scenes(args) -> int:
    from vlmflow.toy.scenes import write_coco

    out = common.output_folder(args.out, "--out")
    with common.no_leftovers(out):
        path = write_coco(out, args.seed, args.n, split=args.split, config=_scene_config(args))
    if args.json:
        common.print_json({"instances": str(path), "images": str(path.parent / "images"), "n": args.n,
                           "split": args.split, "seed": args.seed})
    else:
        print(path)
    return 0


def _clips(args) -> int:
    from vlmflow.toy.clips import ClipConfig, write_clips

    config = ClipConfig(args.min_frames, args.max_frames, _scene_config(args))  # bad counts: SceneConfigError
    out = common.output_folder(args.out, "--out")
    with common.no_leftovers(out):
        path = write_clips(out, args.seed, args.n, split=args.split, config=config)
    if args.json:
        common.print_json({"instances": str(path), "frames": str(path.parent / "frames"), "n": args.n,
                           "split": args.split, "seed": args.seed})
    else:
        print(path)
    return 0


def _train(args) -> int:
    if args.clips and args.arch != "qwen2-vl":
        from vlmflow.errors import UsageError

        raise UsageError(f"--clips {args.clips} needs --arch qwen2-vl (the toy with a video input), not --arch "
                         f"{args.arch}")
    common.output_folder(args.out, "--out")
    common.output_folder(args.work or "runs/toy_train", "--work")
    from dataclasses import replace

    from vlmflow.toy.model import ToyModelConfig
    from vlmflow.toy.train import TrainConfig, train

    model_overrides = {k: v for k, v in (("vision_layers", args.vision_layers),
                                         ("vision_feature_layer", args.vision_feature_layer)) if v is not None}
    cfg = TrainConfig(seed=args.seed, batch_size=args.batch_size, lr=args.lr, steps=args.steps,
                      minutes=args.minutes, threads=args.threads, vision_minutes=args.vision_minutes,
                      aux_weight=args.aux_weight, hide_until=args.hide_until, mimetic=args.mimetic,
                      arch=args.arch, clip_fraction=args.clips,
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

    from vlmflow.errors import WeightsNotAvailableError
    from vlmflow.model import load, toy_model_path
    from vlmflow.toy.evaluate import evaluate_all, write_model_card

    if args.model != "toy" and not (Path(args.model) / "config.json").is_file():
        raise WeightsNotAvailableError(f"no toy model at {args.model} (no config.json there): train one with "
                                       f"`vlmflow toy train --out {args.model}`, or use --model toy")
    torch.set_num_threads(args.threads)
    vlm = load(args.model, dtype="float32")
    if args.clips and not hasattr(vlm.adapter, "prepare_video"):  # before the evaluation, not after it
        from vlmflow.errors import UsageError

        raise UsageError(f"--clips needs a toy with a video input (Qwen2-VL); {args.model} is {vlm.adapter.name}")
    res = evaluate_all(vlm, n=args.n, seed=args.seed, split=args.split, knockout=args.knockout)
    if args.clips:
        from vlmflow.toy.video import clip_eval

        res["clips"] = clip_eval(vlm, n=args.clips, seed=args.seed, split=args.split)
    if args.card:
        model_dir = str(toy_model_path()) if args.model == "toy" else args.model
        command = args.train_command or _recorded_command(model_dir)
        print(write_model_card(model_dir, res, command))
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        for cond, metrics in res["metrics"].items():
            print(cond, " ".join(f"{k}={v}" for k, v in metrics.items()))
        if "clips" in res:
            print("clips", " ".join(f"{k}={v}" for k, v in res["clips"].items()))
    return 0
