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


def role_names(roles, length: int) -> list[str]:
    """Role name per position of row 0 for a sequence of ``length`` (positions past the prompt are generated)."""
    names = roles.names(0)
    return names + ["generated"] * (length - len(names))
