"""A preallocated KV cache for the sweep engine's batched decoding (imported lazily by ``vlmflow.sweep``).

transformers' ``DynamicLayer`` grows by ``torch.cat`` on every forward, copying the whole cache each decode step.
:class:`BufferLayer` is a ``DynamicLayer`` whose keys / values live in one buffer ``[B, Hkv, capacity, D]``
allocated once per chunk: ``update`` writes the new positions in place and returns views of the filled part, so the
attention function (``vlmflow.attention``, through transformers' ``sdpa_attention_forward``) receives tensors with
the same values and shapes as with a DynamicCache. Dropping finished rows (``batch_select_indices``) copies only the
filled part of the kept rows. :func:`buffer_cache` builds a ``DynamicCache`` of such layers, seeded with each row's
prompt prefix (rows of one image share one prefix tensor, broadcast on copy).
"""
from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from vlmflow.errors import VlmflowError


class BufferLayer(DynamicLayer):
    """One decoder layer's KV: ``_k`` / ``_v`` Tensor[B, Hkv, capacity, D], the first ``_n`` positions filled."""

    def __init__(self, segments: "list[tuple[torch.Tensor, torch.Tensor, int]]", batch_size: int, capacity: int):
        # segments: (keys, values) Tensor[1, Hkv, n, D] and a row count: consecutive rows that start from that prefix
        super().__init__()
        keys0, values0, _ = segments[0]
        _, H, n, D = keys0.shape
        if capacity < n:
            raise VlmflowError(f"KV buffer capacity {capacity} is smaller than its {n}-position prefix")
        if sum(c for _, _, c in segments) != batch_size:
            raise VlmflowError(f"KV buffer segments cover {sum(c for _, _, c in segments)} rows, not {batch_size}")
        self._k = keys0.new_empty(batch_size, H, capacity, D)
        self._v = values0.new_empty(batch_size, H, capacity, values0.shape[-1])
        row = 0
        for keys, values, count in segments:
            self._k[row:row + count, :, :n] = keys
            self._v[row:row + count, :, :n] = values
            row += count
        self._n = n
        self.device = keys0.device
        self.is_initialized = True
        self._views()

    def _views(self) -> None:
        self.keys = self._k[:, :, : self._n]
        self.values = self._v[:, :, : self._n]

    def lazy_initialization(self, key_states, value_states) -> None:  # initialised in __init__
        pass

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n, q = self._n, key_states.shape[-2]
        if n + q > self._k.shape[2]:
            raise VlmflowError(f"KV buffer full: {n} + {q} positions exceed its capacity {self._k.shape[2]}")
        self._k[:, :, n:n + q] = key_states
        self._v[:, :, n:n + q] = value_states
        self._n = n + q
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._n

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        n = self._n
        k = self._k.new_empty(len(indices), *self._k.shape[1:])
        v = self._v.new_empty(len(indices), *self._v.shape[1:])
        k[:, :, :n] = self._k[indices, :, :n]
        v[:, :, :n] = self._v[indices, :, :n]
        self._k, self._v = k, v
        self._views()

    def crop(self, tokens_to_remove: int) -> None:
        raise VlmflowError("the sweep engine's KV buffer cannot be cropped")


def buffer_cache(prefix: "list[list[tuple[torch.Tensor, torch.Tensor, int]]]", batch_size: int,
                 capacity: int) -> DynamicCache:
    """A DynamicCache of BufferLayers; ``prefix[layer]``: segments (keys, values Tensor[1, Hkv, n, D], row count)."""
    cache = DynamicCache()
    cache.layers = [BufferLayer(segments, batch_size, capacity) for segments in prefix]
    return cache


__all__ = ["BufferLayer", "buffer_cache"]
