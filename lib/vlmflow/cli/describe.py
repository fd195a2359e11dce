"""`vlmflow describe --model M --image PATH [--prompt TEXT] [--knockout SOURCE:TARGET[@LAYERS] ...] [--json]`:
greedy description of one image, optionally under knockouts (``vlmflow.model.VLM.generate``)."""
from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("describe", help="describe one image (optionally under an attention knockout)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy", help="'toy', a local model folder or a Hugging Face id (default: toy)")
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--prompt", default="describe the image", help="the question (default: describe the image)")
    p.add_argument("--knockout", action="append", default=[], metavar="SOURCE:TARGET[@LAYERS]",
                   help="e.g. image:generated@0-3 (repeat to apply several together)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    p.add_argument("--dtype", default=None, help="float16, bfloat16, float32 (default: the checkpoint's)")
    p.add_argument("--json", action="store_true", help='print {"text": ..., "token_ids": [...]}')
    p.set_defaults(func=run)


def run(args) -> int:
    from vlmflow.adapters.base import load_image
    from vlmflow.knockout import Knockout
    from vlmflow.model import load

    knockouts = [Knockout.parse(k) for k in args.knockout] or None  # parse errors before the model loads
    image = load_image(args.image)
    vlm = load(args.model, device=args.device, dtype=args.dtype)
    gen = vlm.generate(image, args.prompt, knockout=knockouts, max_new_tokens=args.max_new_tokens)
    if args.json:
        print(json.dumps({"text": gen.text, "token_ids": gen.token_ids, "knockout": gen.knockout,
                          "model": args.model, "prompt": args.prompt}))
    else:
        print(gen.text)
    return 0
