"""Independent oracles shared by the knockout tests: eager attention (transformers' own, not vlmflow's) given an
explicit additive mask per decoder layer that the test builds by hand.

Register ``layer_mask_attention`` under a test name, set ``LAYER_MASKS[layer] = mask (1, 1, T, T)`` for every layer,
then run the oracle model; vlmflow's output must equal it."""
from __future__ import annotations

import torch

LAYER_MASKS: dict[int, torch.Tensor] = {}


def layer_mask_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention with this layer's mask from LAYER_MASKS (the model's own mask is ignored on purpose)."""
    from transformers.models.llama.modeling_llama import eager_attention_forward

    return eager_attention_forward(module, query, key, value, LAYER_MASKS[module.layer_idx], scaling=scaling,
                                   dropout=dropout)


def random_image(seed: int, h: int = 40, w: int = 30):
    """A seeded float image (H, W, 3) in [0, 1]: the tiny models' test input."""
    import numpy as np

    return np.random.RandomState(seed).rand(h, w, 3)


def random_pil_image(size: int = 32, seed: int = 0):
    """A seeded RGB PIL image (size x size) of uniform noise: the re-prompting tests' input."""
    import numpy as np
    from PIL import Image

    return Image.fromarray((np.random.default_rng(seed).random((size, size, 3)) * 255).astype("uint8"))


def role_names(roles, length: int) -> list[str]:
    """Role name per position of row 0 for a sequence of ``length`` (positions past the prompt are generated)."""
    names = roles.names(0)
    return names + ["generated"] * (length - len(names))


# ------------------------------------------------------------------------------------------------------------
# The same oracle with the mask built from input ids alone (tests/unit/test_architectures.py, benchmarks/gpu_check.py):
# set a model's text attention to ORACLE, then ``eager_forward(model, inputs, oracle_masks(...))``.

ORACLE = "h2_eager_oracle"
_ORACLE_MASK: dict = {}  # layer -> FloatTensor[B, 1, T, T] (0 / -inf) for the full sequence


def _oracle_attention(module, query, key, value, attention_mask, **kwargs):
    from transformers.models.llama.modeling_llama import eager_attention_forward

    extra = _ORACLE_MASK.get(module.layer_idx)
    if extra is not None:
        Q, K = query.shape[2], key.shape[2]
        extra = extra[:, :, K - Q:K, :K].to(device=query.device, dtype=query.dtype)
        attention_mask = extra if attention_mask is None else attention_mask + extra
    return eager_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register_oracle() -> str:
    """Register ORACLE (eager attention + the masks of ``eager_forward``) with transformers; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ORACLE, _oracle_attention)
    AttentionMaskInterface.register(ORACLE, eager_mask)
    return ORACLE


register_oracle()


def oracle_masks(input_ids, attention_mask, image_token_id, prompt_length, pairs, n_layers):
    """{layer: [B, 1, T, T] additive}: -inf where the query position's kind is a target and the key's kind a source.

    Kinds from ids alone: image = image_token_id; generated = position >= prompt_length; text = the other
    non-pad prompt positions. ``pairs`` = [(source kind, target kind, layers)] (layers None = all)."""
    B, T = input_ids.shape
    pos = torch.arange(T, device=input_ids.device)
    kind = {
        "image": input_ids == image_token_id,
        "generated": (pos >= prompt_length)[None].expand(B, T),
    }
    kind["text"] = attention_mask.bool() & ~kind["image"] & ~kind["generated"]
    masks = {}
    for src, tgt, layers in pairs:
        block = kind[tgt][:, :, None] & kind[src][:, None, :]  # [B, Tq, Tk]
        for layer in (range(n_layers) if layers is None else layers):
            m = masks.setdefault(layer, torch.zeros(B, 1, T, T, device=input_ids.device))
            m.masked_fill_(block[:, None], float("-inf"))
    return masks


def eager_forward(eager, inputs, masks):
    """One no-cache forward of a model whose text attention is ORACLE, under ``masks``, with output_attentions."""
    _ORACLE_MASK.clear()
    _ORACLE_MASK.update(masks)
    try:
        with torch.no_grad():
            return eager(**inputs, output_attentions=True)
    finally:
        _ORACLE_MASK.clear()


def extend(inputs, tokens):
    """``inputs`` (processor output) with ``tokens`` [B, k] appended, for a no-cache forward over a generated
    continuation: ids, attention mask and, where present, mm_token_type_ids (text = 0)."""
    out = dict(inputs)
    B, k = tokens.shape
    out["input_ids"] = torch.cat([inputs["input_ids"], tokens.to(inputs["input_ids"])], 1)
    mask = inputs["attention_mask"]
    out["attention_mask"] = torch.cat([mask, torch.ones(B, k, dtype=mask.dtype, device=mask.device)], 1)
    if "mm_token_type_ids" in inputs:
        tt = inputs["mm_token_type_ids"]
        out["mm_token_type_ids"] = torch.cat([tt, torch.zeros(B, k, dtype=tt.dtype, device=tt.device)], 1)
    return out


def train_losses(model, loss_fn, steps: int = 15, lr: float = 3e-3) -> list[float]:
    """The loss of each of ``steps`` AdamW steps on ``loss_fn()`` (a fixed batch): the overfit checks' loop."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
