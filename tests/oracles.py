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
