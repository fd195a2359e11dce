"""`vlmflow toy scenes|clips|train|eval|study|models`: the toy world from the command line (see ``vlmflow.toy``).

    vlmflow toy scenes --seed 0 --n 100 --out DIR [--split test] [--min-objects 1 --max-objects 4] [--clutter 0.5]
    vlmflow toy clips --seed 0 --n 50 --out DIR [--split test] [--min-frames 2 --max-frames 4]
    vlmflow toy train --out data/toy_model [--arch llava|internvl|qwen2-vl] [--vision-minutes 6] [--minutes 80] [--steps N] [--seed 0] [--resume]
    vlmflow toy train --recipe NAME --cpu-minutes 20 --out DIR --work DIR [--resume]   (toy/recipes.py)
    vlmflow toy eval --model data/toy_model --n 200 [--knockout] --json
    vlmflow toy study --models runs/recipes/*/model --out data/recipe_study/study.json   (toy/recipe_study.py)
    vlmflow toy models [--json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlmflow.cli import common
from vlmflow.toy.recipes import RECIPES


def register(subparsers) -> None:
    """`vlmflow toy ACTION`. Over 60 lines because it declares each action's options, one block per action."""
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
    t.add_argument("--vision-steps", type=common.positive_int, default=None,
                   help="A fixed stage-1 length in steps instead of --vision-minutes: the same stage 1 whatever else "
                        "runs on the machine (a wall-clock stage 1 on a busy machine gets few steps). Default: none.")
    t.add_argument("--aux-weight", type=common.nonnegative_float, default=0.3,
                   help="The weight of the token-probe loss in the main stage. Default: 0.3.")
    t.add_argument("--probe-scale", type=common.positive_float, default=None,
                   help="Fix the token probe's cosine scale at this value instead of learning it. A learned scale "
                        "grows until a small margin between an image token's cosine with its own word and with the "
                        "others is enough; a fixed one keeps asking for a margin, so the words a question uses "
                        "keep finding their tokens (diagnostics/token_alignment.py). Default: learned.")
    t.add_argument("--rope-theta", type=float, default=None,
                   help="The language model's rotary base; with --init, the continued model's base changes to it. "
                        "Qwen2-VL's M-RoPE gives the width section its slowest frequencies, which barely turn "
                        "across the toy's 8 x 8 image at 10000 (diagnostics/position_axes.py). Default: 10000, or "
                        "what the --init model's training.json records.")
    t.add_argument("--probe-position", action="store_true",
                   help="The token probe also names the row and column word of each token's object, so the vision "
                        "tower writes where things are into its tokens (for a tower without absolute position "
                        "embeddings, such as Qwen2-VL's). Default: off.")
    t.add_argument("--hide-until", type=common.fraction, default=0.4,
                   help="Context curriculum: the system prompt and background image tokens are hidden early on, "
                        "less and less until this fraction of the schedule; 0 turns it off. Default: 0.4.")
    t.add_argument("--mimetic", action=argparse.BooleanOptionalAction, default=True,
                   help="Start the language model's attention from a mimetic initialisation (W_k = W_q). "
                        "Default: on.")
    t.add_argument("--fixed-words", type=_words, default=(),
                   help="Answer words whose embedding rows keep their initial values through training, joined by "
                        "commas (e.g. yes,no: a fixed yes/no readout, which cannot collapse while the answer is "
                        "still at chance; vlmflow.toy.train.FixedRows). Default: none.")
    t.add_argument("--threads", type=common.positive_int, default=2, help="CPU threads for torch. Default: 2.")
    t.add_argument("--resume", action="store_true", help="Continue from the last checkpoint in --work.")
    t.add_argument("--recipe", default=None, choices=list(RECIPES),
                   help="Train a named recipe of the training study (vlmflow.toy.recipes): the vision tower and "
                        "projector come from the shipped toy model (tower frozen), the language model starts from "
                        "scratch, with one change per recipe; needs --cpu-minutes. Default: none (the plain "
                        "training above).")
    t.add_argument("--cpu-minutes", type=common.positive_float, default=None,
                   help="A budget in minutes of this process's CPU time (one torch thread) instead of --minutes of "
                        "wall time: with --recipe it covers every stage of the recipe. Default: none.")
    t.add_argument("--arch", default="llava", choices=["llava", "internvl", "qwen2-vl"],
                   help="The toy's architecture, built from transformers' own classes: llava (CLIP tower, MLP "
                        "projector, Llama), internvl (pixel shuffle, Qwen2) or qwen2-vl (2x2 patch merger, M-RoPE). "
                        "Default: llava.")
    t.add_argument("--clips", type=common.fraction, default=0.0,
                   help="The share of main-stage steps that train on toy video clips through Qwen2-VL's video "
                        "input (--arch qwen2-vl only); 0 trains on still scenes only. Default: 0.")
    t.add_argument("--probe-events", type=common.nonnegative_int, default=None, metavar="LAYER",
                   help="On clip steps, the output of this language-model layer at every video token of frame k "
                        "must name the change from frame k-1 there (appears, disappears, moves, turns; "
                        "vlmflow.toy.video.event_token_targets): the vision tower sees one frame at a time, so "
                        "frames can be compared only in the language model. Needs --clips. Default: off.")
    t.add_argument("--event-weight", type=common.positive_float, default=1.0,
                   help="The event probe's loss weight on clip steps. Default: 1.0.")
    t.add_argument("--event-attributes", action="store_true",
                   help="The event probe also names the changed object (its shape, colour and size before the "
                        "change, the words of the event's clause) at the event's tokens. Needs --probe-events. "
                        "Default: off.")
    t.add_argument("--event-places", action="store_true",
                   help="The event probe also names a move's new place (its row and column words, where the "
                        "clause says \"moves to the bottom right\") at the moved object's tokens in its new cells. "
                        "Needs --event-attributes. Default: off.")
    t.add_argument("--probe-question", type=common.nonnegative_int, default=None, metavar="LAYER",
                   help="The output of this language-model layer at the answer position (the last prompt token) "
                        "must name the shape and colour words the question asks about (vlmflow.toy.probe."
                        "QUESTION_HEADS): the query a lookup head needs, carried to where the answer is read. "
                        "Default: off.")
    t.add_argument("--question-weight", type=common.positive_float, default=1.0,
                   help="The question probe's loss weight. Default: 1.0.")
    t.add_argument("--vision-layers", type=common.positive_int, default=None,
                   help="The depth of the CLIP vision tower. Default: ToyModelConfig's.")
    t.add_argument("--vision-feature-layer", type=int, default=None,
                   help="Which hidden state of the vision tower feeds the projector. Default: ToyModelConfig's.")
    t.add_argument("--init", default=None,
                   help="Fine-tune this model folder (loaded in float32) instead of training a new model; pair it "
                        "with --vision-minutes 0 --no-mimetic --hide-until 0. Default: a new model.")
    t.add_argument("--plant", default=None, choices=sorted(_plant_names()),
                   help="Train with this planted mechanism (vlmflow.plant: knockouts applied through the registered "
                        "attention function); a plant applied to every sample is recorded in the exported "
                        "folder's plant.json and applied whenever the model runs. Default: none.")
    t.add_argument("--plant-probability", type=common.fraction, default=1.0,
                   help="The per-sample probability of the plant in training; below 1 the model learns both routes "
                        "and is shipped without the plant. Default: 1.")
    t.add_argument("--kind-mix", type=_kind_mix, default=None,
                   help="The share of each question kind among the training samples, as KIND=SHARE pairs joined by "
                        "commas (describe, exists, count, color, position; shares are normalised). Default: "
                        "vlmflow.toy.train.KIND_MIX.")
    t.add_argument("--exists-negatives", type=_negative_mix, default=None,
                   help="How the 'no' question of each yes/no pair is drawn, as RULE=SHARE pairs joined by commas "
                        "(color: a present shape in another colour; shape: a present colour on another shape; "
                        "random: any absent pair; shares are normalised). Default: "
                        "vlmflow.toy.questions.NEGATIVE_MIX.")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="Evaluate a toy model on held-out test scenes.",
                       description="Evaluate a toy model on fresh scenes: description F1 and the accuracy of each "
                                   "question kind, optionally also under the full image knockout.")
    e.add_argument("--model", default="toy",
                   help="The toy model: 'toy' (the shipped one, or $VLMFLOW_TOY_MODEL), 'toy:NAME' (see `vlmflow toy "
                        "models`) or a model folder. Default: toy.")
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

    st = sub.add_parser("study", help="Measure trained recipe models for the training study (one row each).",
                        description="Measure each recipe model (trained with `vlmflow toy train --recipe`): held-out "
                                    "quality, Figure 1's text attention, the knockouts in all layers, the quarter-depth "
                                    "windows and localization, each with a bootstrap interval, and store the rows with "
                                    "their provenance in --out (other recipes already there are kept).")
    st.add_argument("--models", nargs="+", required=True,
                    help="Model folders written by `vlmflow toy train --recipe NAME` (the row's name is the recipe "
                         "in the folder's training.json), or NAME=FOLDER for any toy model folder (e.g. "
                         "shipped=data/toy_model as the reference row).")
    st.add_argument("--out", default="data/recipe_study/study.json",
                    help="The JSON file of stored rows that the book's chapter reads. Default: "
                         "data/recipe_study/study.json.")
    st.add_argument("--results", default="results/recipe_study",
                    help="The folder for the resumable sweep, localization and quality stores. Default: "
                         "results/recipe_study.")
    st.add_argument("--n-images", type=common.positive_int, default=80,
                    help="Test scenes for the sweeps and localization (at least 1). Default: 80.")
    st.add_argument("--quality-scenes", type=common.positive_int, default=100,
                    help="Test scenes for the held-out quality questions (at least 1). Default: 100.")
    st.add_argument("--seed", type=common.nonnegative_int, default=0,
                    help="The seed of the test scenes and of the bootstrap. Default: 0.")
    st.add_argument("--threads", type=common.positive_int, default=1, help="CPU threads for torch. Default: 1.")
    common.add_json_option(st, "the stored rows")
    st.set_defaults(func=_study)
    m = sub.add_parser("models", help="List the shipped toy models, their architecture, whether each meets its "
                                      "quality targets, and the mechanism planted in each.",
                       description="List the toy models that vf.load and --model accept by name ('toy', 'toy:NAME'): "
                                   "the folder and architecture of each, whether its stored held-out evaluation "
                                   "(eval.json, `vlmflow toy eval --card`) meets every target of its model card, and "
                                   "the knockouts planted in it, which run whenever the model runs (plant.json).")
    common.add_json_option(m, "one object per model: name, folder, architecture, unmet targets (null: never "
                              "evaluated), plant knockouts and description")
    m.set_defaults(func=_models)


def _words(text: str) -> tuple[str, ...]:
    words = tuple(w.strip() for w in text.split(",") if w.strip())
    if not words:
        raise argparse.ArgumentTypeError(f"expected words joined by commas, got {text!r}")
    return words


def _shares(text: str, names, what: str) -> dict:
    """``a=0.3,b=0.5`` -> {"a": 0.3, "b": 0.5} over ``names``; argparse error naming the bad pair."""
    out = {}
    for pair in text.split(","):
        name, _, share = pair.partition("=")
        name = name.strip()
        try:
            value = float(share)
        except ValueError:
            value = -1.0
        if name not in names or value < 0:
            raise argparse.ArgumentTypeError(f"{pair!r} is not {what}=SHARE with {what} one of {', '.join(names)} "
                                             f"and SHARE a number >= 0")
        out[name] = value
    if sum(out.values()) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the shares add up to 0")
    return out


def _kind_mix(text: str) -> dict:
    """``describe=0.3,exists=0.5`` -> {"describe": 0.3, "exists": 0.5}."""
    from vlmflow.toy.evaluate import KINDS

    return _shares(text, KINDS, "KIND")


def _negative_mix(text: str) -> dict:
    """``shape=0.6,color=0.2,random=0.2`` -> the shares of the exists negatives' rules."""
    from vlmflow.toy.questions import NEGATIVE_MIX

    return _shares(text, tuple(NEGATIVE_MIX), "RULE")


def _plant_names() -> list[str]:
    from vlmflow.plant import PRESETS

    return list(PRESETS)


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
    from vlmflow.errors import UsageError

    if args.recipe is not None and args.cpu_minutes is None:
        raise UsageError("--recipe needs --cpu-minutes: every recipe of the study trains under one CPU budget")
    if args.recipe is not None and (args.arch != "llava" or args.plant or args.init):
        raise UsageError("--recipe trains the LLaVA toy from the study's own start: no --arch, --plant or --init")
    if args.clips and args.arch != "qwen2-vl":
        raise UsageError(f"--clips {args.clips} needs --arch qwen2-vl (the toy with a video input), not --arch "
                         f"{args.arch}")
    common.output_folder(args.out, "--out")
    common.output_folder(args.work or "runs/toy_train", "--work")
    if args.recipe is not None:
        return _train_recipe(args)
    from dataclasses import replace

    from vlmflow.toy.train import TrainConfig, train

    model_overrides = {k: v for k, v in (("vision_layers", args.vision_layers),
                                         ("vision_feature_layer", args.vision_feature_layer),
                                         ("rope_theta", args.rope_theta)) if v is not None}
    cfg = TrainConfig(seed=args.seed, batch_size=args.batch_size, lr=args.lr, steps=args.steps,
                      minutes=args.minutes, threads=args.threads, vision_minutes=args.vision_minutes,
                      vision_steps=args.vision_steps,
                      aux_weight=args.aux_weight, probe_position=args.probe_position, probe_scale=args.probe_scale,
                      hide_until=args.hide_until, mimetic=args.mimetic, fixed_words=args.fixed_words,
                      init=args.init, plant=args.plant, plant_probability=args.plant_probability,
                      **({"kind_mix": args.kind_mix} if args.kind_mix else {}),
                      exists_negatives=args.exists_negatives, arch=args.arch, clip_fraction=args.clips,
                      probe_events=args.probe_events,
                      event_weight=args.event_weight, event_attributes=args.event_attributes,
                      event_places=args.event_places,
                      probe_question=args.probe_question, question_weight=args.question_weight,
                      model=replace(_model_config_of(args.init), **model_overrides))
    if args.cpu_minutes is not None:
        cfg = replace(cfg, minutes=args.cpu_minutes, clock="process")
    command = "vlmflow toy train " + " ".join(_argv_after("train"))
    train(cfg, args.out, args.work or "runs/toy_train", resume=args.resume, log=lambda m: print(m, flush=True),
          command=command)
    return 0


def _model_config_of(init: str | None):
    """The ToyModelConfig that ``--init``'s folder records in its training.json (fields a newer config adds keep their
    defaults, which older models were built with); the default config for a new model."""
    from dataclasses import fields

    from vlmflow.toy.model import ToyModelConfig
    from vlmflow.toy.train import base_record

    recorded = (base_record(init) or {}).get("model_config", {})
    return ToyModelConfig(**{f.name: recorded[f.name] for f in fields(ToyModelConfig) if f.name in recorded})


def _train_recipe(args) -> int:
    from vlmflow.toy.recipes import train_recipe

    command = "vlmflow toy train " + " ".join(_argv_after("train"))
    train_recipe(args.recipe, args.cpu_minutes, args.out, args.work or "runs/toy_train", seed=args.seed,
                 resume=args.resume, log=lambda m: print(m, flush=True), command=command)
    return 0


def _study(args) -> int:
    from vlmflow.errors import UsageError

    folders = {}
    for given in args.models:
        name, _, folder = given.rpartition("=") if "=" in given else ("", "", given)
        info = Path(folder) / "training.json"
        if not info.is_file():
            raise UsageError(f"--models: {folder} has no training.json (not a trained toy model folder)")
        name = name or (json.loads(info.read_text()).get("recipe") or {}).get("name")
        if not name:
            raise UsageError(f"--models: {info} names no recipe (train it with `vlmflow toy train --recipe NAME`, "
                             f"or name the row: NAME={folder})")
        if name in folders:
            raise UsageError(f"--models: recipe {name!r} is given twice ({folders[name]}, {folder})")
        folders[name] = folder
    import torch

    from vlmflow.toy.recipe_study import study_rows, write_study

    torch.set_num_threads(args.threads)
    study = study_rows(folders, args.results, n_images=args.n_images, quality_scenes=args.quality_scenes,
                       seed=args.seed)
    path = write_study(args.out, study)
    if args.json:
        common.print_json({name: s["row"] for name, s in study.items()})
    else:
        print(path)
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
    from vlmflow.model import is_toy_name, load, toy_model_folder
    from vlmflow.toy.evaluate import evaluate_all, write_model_card

    if is_toy_name(args.model):
        model_dir = str(toy_model_folder(args.model))  # an unknown name: the valid list
    elif not (Path(args.model) / "config.json").is_file():
        raise WeightsNotAvailableError(f"no toy model at {args.model} (no config.json there): train one with "
                                       f"`vlmflow toy train --out {args.model}`, or use --model toy")
    else:
        model_dir = args.model
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
        command = args.train_command or _recorded_command(model_dir)
        print(write_model_card(model_dir, res, command, name=args.model if is_toy_name(args.model) else "toy"))
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        for cond, metrics in res["metrics"].items():
            print(cond, " ".join(f"{k}={v}" for k, v in metrics.items()))
        if "clips" in res:
            print("clips", " ".join(f"{k}={v}" for k, v in res["clips"].items()))
    return 0


def _models(args) -> int:
    from vlmflow.model import architecture, toy_models
    from vlmflow.plant import read_plant
    from vlmflow.toy.evaluate import status_text, stored_status

    rows, statuses = [], []
    for name, folder in toy_models().items():
        plant, status = read_plant(folder), stored_status(folder)
        statuses.append(status)
        rows.append({"name": name, "folder": str(folder), "architecture": architecture(str(folder)),
                     "unmet_targets": None if status is None else
                     [{k: r[k] for k in ("check", "metric", "value", "bound")} for r in status if not r["met"]],
                     "plant": plant.spec_ids if plant else [],
                     "description": plant.description if plant else "no plant: trained without knockouts"})
    if args.json:
        common.print_json(rows)
        return 0
    for r, status in zip(rows, statuses):
        print(f"{r['name']:<16} {r['architecture']:<10} {' & '.join(r['plant']) or '-':<32} "
              f"{status_text(status)}; {r['description']}")
    return 0
