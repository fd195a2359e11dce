"""`vlmflow describe --model M --image PATH [--prompt TEXT] [--knockout SOURCE:TARGET[@LAYERS] ...] [--json]`:
greedy description of one image, optionally under knockouts (``vlmflow.model.VLM.generate``)."""
from __future__ import annotations

from vlmflow.cli import common


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "describe", help="Describe one image, optionally under an attention knockout.",
        description="Describe one image with greedy decoding, optionally while attention knockouts block some token "
                    "groups from reading others (e.g. the generated text from the image).")
    common.add_model_options(p)
    p.add_argument("--image", required=True, help="The image file to describe (PNG, JPEG, ...).")
    p.add_argument("--prompt", default="describe the image", type=common.text,
                   help="The question put to the model with the image. Default: 'describe the image'.")
    p.add_argument("--knockout", action="append", default=[], metavar="SOURCE:TARGET[@LAYERS]",
                   help="Block TARGET positions from attending to SOURCE positions in LAYERS (all layers without "
                        "@), e.g. image:generated@0-3. Roles: bos, system, user, image, query, assistant, "
                        "generated; groups: text, prompt, template, all. Repeat the option to apply several "
                        "knockouts together.")
    p.add_argument("--max-new-tokens", type=common.positive_int, default=64,
                   help="The most tokens to generate (at least 1). Default: 64.")
    common.add_json_option(p, "the text, token ids, knockout, model and prompt")
    p.set_defaults(func=run)


def run(args) -> int:
    from vlmflow.adapters.base import load_image
    from vlmflow.knockout import Knockout

    knockouts = [Knockout.parse(k) for k in args.knockout] or None  # every check before the model loads
    image = load_image(args.image)
    vlm = common.load_model(args)
    gen = vlm.generate(image, args.prompt, knockout=knockouts, max_new_tokens=args.max_new_tokens)
    if args.json:
        common.print_json({"text": gen.text, "token_ids": gen.token_ids, "knockout": gen.knockout,
                           "model": args.model, "prompt": args.prompt})
    else:
        print(gen.text)
    return 0
