"""`vlmflow demo [--model M] [--image PATH]`: one image described three times, as in the paper's Figure 2 setting:
no knockout, KO image->generated (generated tokens cannot read the image) and KO image->text (the prompt's text
cannot read the image). Default: the shipped toy model on a toy scene; without a trained toy model, an untrained
(random) toy LLaVA, which shows the mechanics only."""
from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="describe an image with and without knockouts",
                              description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="'toy' (default), a local model folder or a Hugging Face id")
    p.add_argument("--image", default=None, help="image file (default: a toy scene)")
    p.add_argument("--seed", type=int, default=0, help="toy scene seed (default: 0)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.set_defaults(func=run)


def _default_model(args):
    from vlmflow.errors import WeightsNotAvailableError
    from vlmflow.model import load, wrap

    if args.model is not None:
        return load(args.model, device=args.device, dtype=args.dtype), args.model
    try:
        return load("toy", device=args.device, dtype=args.dtype), "toy"
    except WeightsNotAvailableError as exc:
        print(f"note: {exc}; using an untrained toy LLaVA (random weights)", file=sys.stderr)
        from vlmflow.toy.model import build

        model, processor = build(seed=args.seed)
        return wrap(model, processor, name="toy (untrained)"), "toy (untrained)"


def _default_image(args):
    if args.image is not None:
        return args.image, args.image
    from vlmflow.toy.scenes import make_scene

    scene = make_scene(args.seed, "test", 0)
    return scene.image, f"toy scene (seed {args.seed}): {scene.description}"


def run(args) -> int:
    from vlmflow.knockout import Knockout

    vlm, model_name = _default_model(args)
    image, image_name = _default_image(args)
    print(f"model: {model_name} ({vlm.num_layers} layers)\nimage: {image_name}\n")
    runs = [("no knockout", None), ("KO image->generated", Knockout("image", "generated")),
            ("KO image->text", Knockout("image", "text"))]
    for label, ko in runs:
        gen = vlm.generate(image, "describe the image", knockout=ko, max_new_tokens=args.max_new_tokens)
        print(f"{label:>20}: {gen.text}")
    return 0
