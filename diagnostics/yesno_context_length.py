"""Why the toy model's yes/no questions need a context curriculum: a text-only analogue of the toy language model.

The toy LM (8 layers, 128 wide, 4 heads; ``toy.model.ToyModelConfig``) reads ``<fillers with one object "c s"
somewhere> c' s' ? :`` and must answer yes iff (c', s') == (c, s) (balanced; negatives change the colour, the shape,
or both). The answer depends on neither the question nor the context alone, so at initialisation there is no
first-order signal, and the answer position averages over every token. This script trains the same LM from scratch
with N filler tokens (random words, or one repeated word like a constant system prompt / background) and prints the
yes/no accuracy on fresh batches, for plain and mimetic attention initialisation (``toy.train.mimetic_init``).

    .venv/bin/python diagnostics/yesno_context_length.py --steps 400

Measured 2026-11-26 on the 2-core CPU (`--steps 300 --threads 2`, 9 min; held-out accuracy on 256 fresh sequences):
8 fillers: 0.88-0.94 at step 300 for every variant (random or constant fillers, plain or mimetic); 60 fillers: plain
init at chance (0.48-0.54, a constant answer) through step 300 for random and constant fillers alike, mimetic init at
chance with random fillers and leaving it with constant ones (0.65 at step 200, 0.67 at 300). Hence
``toy.train.hidden_context``: early in training the system prompt and the background image tokens are hidden from
the text, so the first yes/no circuit forms on a short context.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from vlmflow.toy.model import ToyModelConfig
from vlmflow.toy.train import mimetic_init

COLORS, SHAPES, FILLERS = 6, 5, 40
YES, NO, QMARK, COLON = 0, 1, 2, 3
COLOR0, SHAPE0 = 4, 4 + COLORS
FILLER0 = SHAPE0 + SHAPES


def make_batch(rng: np.random.Generator, n_fill: int, constant: bool, batch_size: int = 64):
    """(input_ids [B, n_fill + 6], labels [B] in {YES, NO}), balanced."""
    xs, ys = [], []
    for _ in range(batch_size):
        c, s = int(rng.integers(COLORS)), int(rng.integers(SHAPES))
        yes = rng.random() < 0.5
        qc, qs = c, s
        if not yes:
            rule = int(rng.integers(3))
            if rule in (0, 2):
                qs = (s + 1 + int(rng.integers(SHAPES - 1))) % SHAPES
            if rule in (1, 2):
                qc = (c + 1 + int(rng.integers(COLORS - 1))) % COLORS
        fill = [FILLER0] * n_fill if constant else list(FILLER0 + rng.integers(FILLERS, size=n_fill))
        at = int(rng.integers(n_fill + 1))
        xs.append(fill[:at] + [COLOR0 + c, SHAPE0 + s] + fill[at:] + [COLOR0 + qc, SHAPE0 + qs, QMARK, COLON])
        ys.append(YES if yes else NO)
    return torch.tensor(xs), torch.tensor(ys)


def run(n_fill: int, constant: bool, mimetic: bool, steps: int, seed: int = 0, every: int = 50) -> list[tuple]:
    cfg = ToyModelConfig()
    lm = LlamaConfig(vocab_size=FILLER0 + FILLERS, hidden_size=cfg.text_hidden, intermediate_size=cfg.text_intermediate,
                     num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
                     num_key_value_heads=cfg.text_heads, max_position_embeddings=512, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(lm)
    if mimetic:
        mimetic_init(model, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, betas=(0.9, 0.98))
    rng = np.random.default_rng(seed)
    history = []
    for step in range(1, steps + 1):
        x, y = make_batch(rng, n_fill, constant)
        logits = model(input_ids=x).logits[:, -1, :2]
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % every == 0:
            with torch.no_grad():
                xe, ye = make_batch(np.random.default_rng(10 ** 6 + step), n_fill, constant, 256)
                acc = float((model(input_ids=xe).logits[:, -1, :2].argmax(-1) == ye).float().mean())
            history.append((step, round(loss.item(), 3), round(acc, 3)))
    return history


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--fillers", type=int, nargs="+", default=[8, 60])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for n in args.fillers:
        for constant in (False, True):
            for mimetic in (False, True):
                t0 = time.time()
                h = run(n, constant, mimetic, args.steps)
                curve = " ".join(f"{s}:{a:.2f}" for s, _, a in h)
                print(f"fillers={n:3d} {'constant' if constant else 'random  '} "
                      f"{'mimetic' if mimetic else 'plain  '} held-out acc by step  {curve}  ({time.time() - t0:.0f} s)",
                      flush=True)


if __name__ == "__main__":
    main()
