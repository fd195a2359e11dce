"""`vlmflow demo [--model M] [--image PATH]`: one image described three times, as in the paper's Figure 2 setting:
no knockout, KO image->generated (generated tokens cannot read the image) and KO image->text (the prompt's text
cannot read the image). Default: the shipped toy model on a toy scene; without a trained toy model, an untrained
(random) toy LLaVA, which shows the mechanics only."""
from __future__ import annotations

import sys

from vlmflow.cli import common


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="Describe an image with and without knockouts.",
        description="Describe one image three times, as in the paper's Figure 2 setting: without knockout, with the "
                    "generated tokens blocked from the image, and with the prompt's text blocked from the image. "
                    "Default: the shipped toy model on a toy scene.")
    common.add_model_options(p, model_default=None,
                             default_text="toy, or an untrained toy model when the shipped one is missing")
    p.add_argument("--image", default=None, help="The image file to describe. Default: a toy scene.")
    p.add_argument("--seed", type=common.nonnegative_int, default=0, help="The seed of the toy scene. Default: 0.")
    p.add_argument("--max-new-tokens", type=common.positive_int, default=48,
                   help="The most tokens of each description (at least 1). Default: 48.")
    common.add_json_option(p, "the model, the image and the three descriptions")
    p.set_defaults(func=run)


def _default_model(args):
    from vlmflow.errors import WeightsNotAvailableError
    from vlmflow.model import load, wrap

    if args.model is not None:
        return common.load_model(args), args.model
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
    from vlmflow.model import check_device

    check_device(args.device)
    if args.image is not None:
        from vlmflow.adapters.base import load_image

        load_image(args.image)  # a bad file fails before the model loads
    vlm, model_name = _default_model(args)
    image, image_name = _default_image(args)
    runs = [("no knockout", None), ("KO image->generated", Knockout("image", "generated")),
            ("KO image->text", Knockout("image", "text"))]
    texts = {label: vlm.generate(image, "describe the image", knockout=ko, max_new_tokens=args.max_new_tokens).text
             for label, ko in runs}
    if args.json:
        common.print_json({"model": model_name, "layers": vlm.num_layers, "image": image_name, "descriptions": texts})
        return 0
    print(f"model: {model_name} ({vlm.num_layers} layers)\nimage: {image_name}\n")
    for label, text in texts.items():
        print(f"{label:>20}: {text}")
    return 0
