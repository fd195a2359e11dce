"""The one attention function vlmflow installs in a VLM's language model: knockout + row-selective recording.

``ensure_registered()`` registers ``attention_forward`` as ``"vlmflow"`` in transformers' ``AttentionInterface`` and
transformers' own ``sdpa_mask`` under the same name in ``AttentionMaskInterface`` (without a mask function the model
would build no causal/padding mask at all). ``Adapter.set_attention("vlmflow")`` routes only the language model
through it; the vision tower keeps its implementation.

Per-forward state (token roles, the compiled knockout plan, the recorder) lives in a ``ContextVar`` set by
:func:`active`, so ``model.generate`` with its DynamicCache runs unchanged. With no state active, the function is
transformers' ``sdpa_attention_forward`` called with the same arguments: bit-identical to ``"sdpa"``.

Geometry of one call: query (B, H, Q, D), key/value (B, Hkv, K, D) including the cache. With a DynamicCache the
query rows are the last Q of the K key positions (also with left padding); positions >= the prompt length are
``generated``. A knockout sets the pre-softmax score of (target row, source column) pairs to the dtype minimum
(bool masks: False) on top of the incoming causal/padding mask.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from vlmflow.errors import UnsupportedAttentionError, VlmflowError
from vlmflow.roles import GENERATED, PAD, ROLES, role_id_mask

if TYPE_CHECKING:
    import torch

    from vlmflow.knockout import Knockout
    from vlmflow.record import AttentionRecord, Record
    from vlmflow.roles import TokenRoles

NAME = "vlmflow"
N_ROLES = len(ROLES)
_STATE: ContextVar["ForwardState | None"] = ContextVar("vlmflow_attention_state", default=None)
_registered = False


def ensure_registered() -> None:
    """Register the ``"vlmflow"`` attention and mask functions with transformers (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    _registered = True


# ---- knockout plan ------------------------------------------------------------------------------------------
class KnockoutPlan:
    """Knockouts of a batch compiled to role-pair tables, plus position terms for position-level knockouts.

    ``tables[g]``: BoolTensor[B, n_roles, n_roles], True where (target role, source role) is blocked (None when group
    g blocks by position only); ``terms[g]``: list of (target roles BoolTensor[n_roles], blocked columns
    BoolTensor[B, P] in padded batch coordinates), one per distinct target set of the position-restricted specs;
    ``layer_group[l]`` is the group index for decoder layer l (-1 = nothing blocked there). Layers with equal tables
    and terms share one group, so their mask is built once per forward.
    """

    def __init__(self, pair: "torch.Tensor", terms: "list[tuple[torch.Tensor, torch.Tensor]] | None" = None):
        # pair: BoolTensor[B, L, n_roles, n_roles]; terms: (target roles [n_roles], columns [B, L, P]) each
        B, L = pair.shape[:2]
        self.batch_size, self.num_layers = int(B), int(L)
        self.layer_group: list[int] = [-1] * L
        self.tables: list[torch.Tensor | None] = []
        self.terms: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        terms = terms or []
        seen: dict[bytes, int] = {}
        for layer in range(L):  # compile time only, never on the forward path
            table = pair[:, layer]
            layer_terms = [(tgt, cols[:, layer]) for tgt, cols in terms if bool(cols[:, layer].any())]
            has_table = bool(table.any())
            if not has_table and not layer_terms:
                continue
            key = b"|".join([table.numpy().tobytes()] + [t.numpy().tobytes() + c.numpy().tobytes()
                                                          for t, c in layer_terms])
            if key not in seen:
                seen[key] = len(self.tables)
                self.tables.append(table if has_table else None)
                self.terms.append(layer_terms)
            self.layer_group[layer] = seen[key]
        self._on_device: dict[Any, tuple[list, list]] = {}

    def group(self, group: int, device) -> "tuple[torch.Tensor | None, list[tuple[torch.Tensor, torch.Tensor]]]":
        """(role-pair table or None, position terms) of one layer group, on ``device``."""
        moved = self._on_device.get(device)
        if moved is None:
            moved = self._on_device[device] = (
                [None if t is None else t.to(device) for t in self.tables],
                [[(tgt.to(device), cols.to(device)) for tgt, cols in terms] for terms in self.terms])
        return moved[0][group], moved[1][group]

    @property
    def empty(self) -> bool:
        return not self.tables


def per_row_knockouts(knockouts, batch_size: int) -> list[list["Knockout"]]:
    """Normalise ``knockouts`` to one list of specs per batch row.

    None / [] -> nothing; a Knockout -> that spec for every row; a list of Knockouts -> all of them, applied together,
    for every row; a list of ``batch_size`` entries that are lists / tuples / None -> per-row specs.
    """
    from vlmflow.knockout import Knockout

    if knockouts is None:
        return [[] for _ in range(batch_size)]
    if isinstance(knockouts, Knockout):
        return [[knockouts] for _ in range(batch_size)]
    items = list(knockouts)
    if all(isinstance(k, Knockout) for k in items):
        return [list(items) for _ in range(batch_size)]
    if len(items) != batch_size:
        raise VlmflowError(f"per-row knockouts: got {len(items)} rows for a batch of {batch_size}")
    rows = []
    for i, row in enumerate(items):
        row = [] if row is None else [row] if isinstance(row, Knockout) else list(row)
        for k in row:
            if not isinstance(k, Knockout):
                raise VlmflowError(f"per-row knockouts: row {i} holds {k!r}, not a vlmflow.Knockout")
        rows.append(row)
    return rows


def compile_knockouts(knockouts, batch_size: int, n_layers: int, roles: "TokenRoles | None" = None, *,
                      layer_roles: "Sequence[TokenRoles] | None" = None) -> KnockoutPlan | None:
    """Specs (see ``per_row_knockouts``) -> a KnockoutPlan, or None when nothing is blocked anywhere.

    Role-only specs fill the role-pair tables; specs with ``source_positions`` or ``source_frames`` become position
    terms, which need
    ``roles`` (the batch's left-padded layout) to place each row's prompt positions.

    layer_roles: one TokenRoles per decoder layer, for a KV cache that holds other prompt positions in each layer
    (re-prompting's compressed cache, ``vlmflow.reprompt``): layer l's prompt keys have the roles
    ``layer_roles[l]``. Each layer's role-pair table is then resolved against its own roles into position terms
    over the prompt columns (exact whatever the layers hold); the table keeps only the ``generated`` source column,
    the keys past the prompt, which every layer shares. ``roles`` gives the rows' own roles (the query rows of the
    continuation and the generated tail) and must have the layers' shape. Specs naming source positions or frames
    are refused there (a compressed cache renumbers the prompt's positions per layer)."""
    rows = per_row_knockouts(knockouts, batch_size)
    if not any(rows):
        return None
    if layer_roles is None:
        pair, term_list = _compile_rows(rows, batch_size, n_layers, roles)
    else:
        pair, term_list = _compile_per_layer(rows, batch_size, n_layers, roles, layer_roles)
    if roles is not None:
        check_rows_keep_a_key(pair, term_list, roles, rows)
        if layer_roles is None:  # a per-layer cache is derived: a spec that blocks nothing there is expected
            warn_inert(rows, roles)
    plan = KnockoutPlan(pair, term_list)
    return None if plan.empty else plan


def _compile_rows(rows: "list[list[Knockout]]", batch_size: int, n_layers: int, roles: "TokenRoles | None"
                  ) -> "tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]":
    """(role-pair tables BoolTensor[B, L, n_roles, n_roles], position terms) of per-row specs on one layout."""
    import torch

    pair = torch.zeros(batch_size, n_layers, N_ROLES, N_ROLES, dtype=torch.bool)
    terms: dict[tuple[bool, ...], torch.Tensor] = {}  # target role mask -> columns BoolTensor[B, L, P]
    for b, specs in enumerate(rows):
        for ko in specs:
            layers = list(ko.layer_indices(n_layers))  # LayerIndexError names the layer and the valid range
            if not layers:
                continue
            if not ko.by_position:
                block = torch.tensor(role_id_mask(ko.target))[:, None] & torch.tensor(role_id_mask(ko.source))[None, :]
                pair[b, layers] |= block
                continue
            if roles is None:
                raise VlmflowError(f"knockout {ko.spec_id} names source positions: compiling it needs the batch's "
                                   f"token roles (vlmflow.attention.active passes them)")
            ids = roles.ids[b, : roles.prompt_length]
            n_pad = int((ids == PAD).sum())  # left padding: the row's own prompt starts at n_pad
            cols = ko.source_columns(ids[n_pad:].tolist(), _row_frames(roles, b, n_pad))
            if not any(cols):
                continue
            tgt = tuple(role_id_mask(ko.target))
            if tgt not in terms:
                terms[tgt] = torch.zeros(batch_size, n_layers, roles.prompt_length, dtype=torch.bool)
            row = torch.zeros(roles.prompt_length, dtype=torch.bool)
            row[n_pad:] = torch.tensor(cols)
            terms[tgt][b, layers] |= row
    return pair, [(torch.tensor(t), c) for t, c in terms.items()]


def _compile_per_layer(rows: "list[list[Knockout]]", batch_size: int, n_layers: int, roles: "TokenRoles | None",
                       layer_roles: "Sequence[TokenRoles]"
                       ) -> "tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]":
    """``compile_knockouts`` with per-layer prompt roles: every prompt-column block as a position term."""
    import torch

    if roles is None or len(layer_roles) != n_layers:
        raise VlmflowError(f"per-layer roles: need the rows' roles and one TokenRoles per decoder layer "
                           f"({n_layers}), got {'no roles' if roles is None else len(layer_roles)}")
    for ko in (k for specs in rows for k in specs if k.by_position):
        raise VlmflowError(f"knockout {ko.spec_id} names source positions or frames: with per-layer roles (a "
                           f"compressed cache) the prompt positions are renumbered per layer; use a role-only knockout")
    P = roles.prompt_length
    for layer, lr in enumerate(layer_roles):
        if tuple(lr.ids.shape) != tuple(roles.ids.shape) or lr.prompt_length != P:
            raise VlmflowError(f"per-layer roles: layer {layer} has shape {tuple(lr.ids.shape)} (prompt length "
                               f"{lr.prompt_length}), the rows' roles {tuple(roles.ids.shape)} ({P})")
    pair = torch.zeros(batch_size, n_layers, N_ROLES, N_ROLES, dtype=torch.bool)
    terms: dict[tuple[bool, ...], torch.Tensor] = {}  # target role mask -> columns BoolTensor[B, L, P]

    def add(target: "torch.Tensor", cols: "torch.Tensor", layer: int) -> None:  # cols: BoolTensor[B, P]
        key = tuple(target.tolist())
        if key not in terms:
            terms[key] = torch.zeros(batch_size, n_layers, P, dtype=torch.bool)
        terms[key][:, layer] |= cols

    tables, _ = _compile_rows(rows, batch_size, n_layers, roles)  # role-only: the same tables for any layout
    for layer, lr in enumerate(layer_roles):
        table = tables[:, layer]  # [B, n_roles (target), n_roles (source)]
        pair[:, layer, :, GENERATED] = table[:, :, GENERATED]  # keys past the prompt: the same in every layer
        ids = lr.ids[:, :P].cpu().long()
        cols_of = table.gather(2, ids[:, None, :].expand(batch_size, N_ROLES, P))  # [B, target role, P]
        for t in range(N_ROLES):  # target roles with the same blocked columns share one term
            if not bool(cols_of[:, t].any()):
                continue
            same = torch.tensor([bool(torch.equal(cols_of[:, u], cols_of[:, t])) for u in range(N_ROLES)])
            if int(same.nonzero()[0]) == t:
                add(same, cols_of[:, t], layer)
    return pair, [(torch.tensor(t), c) for t, c in terms.items()]


def _row_frames(roles: "TokenRoles", row: int, n_pad: int) -> list[int]:
    """The frame index of each position of ``row``'s own (unpadded) prompt."""
    return roles.frame_ids()[row, n_pad:roles.prompt_length].tolist()


def check_rows_keep_a_key(pair: "torch.Tensor", terms: "list[tuple[torch.Tensor, torch.Tensor]]",
                          roles: "TokenRoles", rows: "list[list[Knockout]]") -> None:
    """KnockoutError if, in some layer, a query position would have every key it can see (itself and the positions
    before it) blocked: softmax over no key has no meaning (sdpa returns NaN or spreads the row uniformly over
    masked keys), so e.g. ``all:all`` or ``text:text`` (the first token sees only itself) is refused.

    pair: BoolTensor[B, L, n_roles, n_roles]; terms: (target roles [n_roles], blocked columns [B, L, P]); checked
    for every prompt position and for the generated positions (which see the whole prompt and themselves)."""
    import torch

    from vlmflow.knockout import KnockoutError

    B, L = pair.shape[:2]
    P = roles.prompt_length
    ids = roles.ids[:, :P].cpu().long()  # [B, P]
    # the answer depends only on (prompt layout, the layer's table, the layer's position columns): check each distinct
    # combination once (a sweep batch repeats one layout and a few tables over its rows and layers)
    layouts, layout_of = torch.unique(ids, dim=0, return_inverse=True)
    parts = [layout_of[:, None, None].expand(B, L, 1), pair.reshape(B, L, N_ROLES * N_ROLES).long()]
    parts += [cols.long() for _, cols in terms]
    keys = torch.cat(parts, -1).reshape(B * L, -1)
    uniq, inv = torch.unique(keys, dim=0, return_inverse=True)
    U = uniq.shape[0]
    u_ids = layouts[uniq[:, 0]]  # [U, P]
    u_pair = uniq[:, 1:1 + N_ROLES * N_ROLES].bool().reshape(U, N_ROLES, N_ROLES)
    blocked = u_pair.gather(2, u_ids[:, None, :].expand(U, N_ROLES, P))  # [U, t, k]: a role-t query may not read k
    offset = 1 + N_ROLES * N_ROLES
    for tgt, _ in terms:
        blocked = blocked | (tgt[None, :, None] & uniq[:, None, offset:offset + P].bool())
        offset += P
    valid = u_ids != PAD
    allowed = ~blocked & valid[:, None, :]
    seen = allowed.to(torch.uint8).cummax(-1).values.bool()  # [U, t, p]: a key at or before p is readable by t
    own = seen.gather(1, u_ids[:, None, :])[:, 0]  # [U, P] at the query's own role
    empty_prompt = valid & ~own
    # a generated query sees the prompt and the generated keys up to itself
    empty_generated = ~allowed[:, GENERATED].any(-1) & u_pair[:, GENERATED, GENERATED]  # [U]
    bad = empty_prompt.any(-1) | empty_generated
    if not bool(bad.any()):
        return
    item = int(bad[inv].nonzero()[0])  # the first (row, layer) in batch order
    b, layer = divmod(item, L)
    u = int(inv[item])
    if empty_prompt[u].any():
        p = int(empty_prompt[u].nonzero()[0])
        n_pad = int((~valid[u]).sum())
        who = f"the {ROLES[int(u_ids[u, p])]} token at prompt position {p - n_pad}"
        sees = "itself only" if p == n_pad else f"prompt positions 0-{p - n_pad}"
    else:
        who, sees = "every generated token", "the prompt and the generated tokens"
    specs = " & ".join(k.spec_id for k in rows[b])
    raise KnockoutError(
        f"knockout {specs} leaves {who} with no key to attend to in layer {layer} (it sees {sees}, all blocked); "
        f"keep at least one visible key per position, e.g. leave the target's own roles out of the source "
        f"(image:all, not all:all)"
    )


def warn_inert(rows: "list[list[Knockout]]", roles: "TokenRoles") -> None:
    """VlmflowWarning for each spec that names layers and positions but blocks no (query, key) pair on this input
    (e.g. ``system:generated`` on a model without a system prompt): its result equals the baseline's, which is
    rarely what was meant. Specs with an explicitly empty layer or position set are left alone (sweeps use them)."""
    import warnings

    from vlmflow.errors import VlmflowWarning

    P = roles.prompt_length
    inert: dict[str, str] = {}
    active_ids: set[str] = set()
    layouts: dict[bytes, tuple] = {}
    for b, specs in enumerate(rows):
        todo = [ko for ko in specs if ko.layers != () and ko.source_positions != () and ko.source_frames != ()
                and ko.spec_id not in active_ids]
        if not todo:
            continue
        row = roles.ids[b, :P]
        key = row.cpu().numpy().tobytes() + roles.frame_ids()[b, :P].cpu().numpy().tobytes()
        if key not in layouts:  # first and last position of each role in the row's own (unpadded) prompt
            own = [r for r in row.tolist() if r != PAD]
            first = {r: i for i, r in reversed(list(enumerate(own)))}
            last = {r: i for i, r in enumerate(own)}
            first[GENERATED] = len(own)
            last[GENERATED] = 10 ** 9  # generated positions come after every prompt position
            layouts[key] = own, first, last, _row_frames(roles, b, P - len(own))
        own, first, last, own_frames = layouts[key]
        for ko in todo:
            src, tgt = role_id_mask(ko.source), role_id_mask(ko.target)
            if not ko.by_position:
                source_at = [first[r] for r in first if src[r]]
            else:
                source_at = [i for i, c in enumerate(ko.source_columns(own, own_frames)) if c]
                source_at += [len(own)] if src[GENERATED] else []
            target_at = [last[r] for r in last if tgt[r]]
            if source_at and target_at and min(source_at) <= max(target_at):
                active_ids.add(ko.spec_id)
                inert.pop(ko.spec_id, None)
                continue
            if not source_at:
                why = f"no position of the input has the source role(s) {'+'.join(sorted(ko.source_roles))}"
            elif not target_at:
                why = f"no position of the input has the target role(s) {'+'.join(sorted(ko.target_roles))}"
            else:
                why = "every target position comes before every source position (attention is causal)"
            inert[ko.spec_id] = why
    for spec, why in inert.items():
        warnings.warn(f"knockout {spec} blocks nothing on this input: {why}; the output equals the baseline's",
                      VlmflowWarning, stacklevel=4)


# ---- recorder ---------------------------------------------------------------------------------------------
class Recorder:
    """Collects reduced attention rows during the forwards of one :func:`active` block.

    Each recorded (layer, forward) adds one batch-wide chunk: the union of the rows any batch row selects, with a
    per-row selection flag, so the forward path has no Python loop over rows or positions.
    """

    def __init__(self, spec: "Record", roles: "TokenRoles", n_layers: int):
        import torch

        self.spec = spec
        self.roles = roles
        self.layers = spec.layer_indices(n_layers)
        self._layer_set = set(self.layers)
        self._row_roles = role_id_mask(sorted(spec.row_roles)) if spec.row_roles else [False] * N_ROLES
        # chunks: (layer, positions LongTensor[r] (padded batch coordinates), selected BoolTensor[B, r],
        #          mass Tensor[B, r, n_roles], image Tensor[B, r, (H,) N_max], full rows Tensor[B, r, K] or None)
        self.chunks: list[tuple] = []
        self._image_pos = [roles.positions("image", b) for b in range(roles.batch_size)]
        n_max = max((len(p) for p in self._image_pos), default=0)
        # image positions padded to N_max per row (rows with fewer image tokens are sliced back in `result`)
        self._image_idx = torch.zeros(roles.batch_size, n_max, dtype=torch.long)
        for b, p in enumerate(self._image_pos):
            self._image_idx[b, : len(p)] = p
        self._image_idx_on: dict = {}

    def wants(self, layer: int) -> bool:
        return layer in self._layer_set

    def select(self, role_k: "torch.Tensor", Q: int) -> "torch.Tensor":
        """BoolTensor[B, Q]: which of this call's query rows to record."""
        import torch

        K = role_k.shape[1]
        table = torch.tensor(self._row_roles, device=role_k.device)
        sel = table[role_k[:, K - Q:]]
        if self.spec.last_prompt:
            last = self.roles.prompt_length - 1
            if K - Q <= last < K:
                sel[:, last - (K - Q)] = True
        return sel & (role_k[:, K - Q:] != PAD)

    def observe(self, layer: int, query, key, mask, scaling: float | None, role_k, sel) -> None:
        """Softmax rows for the selected queries only (q_sel @ K^T with the same mask), reduced at once."""
        import torch

        B, H, Q, D = query.shape
        Hkv, K = key.shape[1], key.shape[2]
        idx = sel.any(0).nonzero().flatten()  # union of the rows any batch row records: LongTensor[r]
        r = idx.numel()
        scale = scaling if scaling is not None else D ** -0.5
        q = query[:, :, idx].float().reshape(B, Hkv, H // Hkv, r, D)  # GQA: group query heads by kv head
        k = key.float()[:, :, None]  # (B, Hkv, 1, K, D)
        scores = (q @ k.transpose(-1, -2)).reshape(B, H, r, K) * scale
        if mask is None:
            mask = _causal(Q, K, query.device)
        m = mask[:, :, idx] if mask.shape[2] == Q else mask  # (B|1, 1, r, K)
        if m.dtype == torch.bool:
            scores = scores.masked_fill(~m, float("-inf"))
        else:
            scores = scores + m.float()
        probs = scores.softmax(-1)  # (B, H, r, K) float32, only the r selected rows
        mean = probs.mean(1)  # (B, r, K)
        onehot = torch.nn.functional.one_hot(role_k, N_ROLES).float()  # (B, K, n_roles)
        mass = mean @ onehot  # (B, r, n_roles)
        img = self._image_idx_on.get(query.device)
        if img is None:
            img = self._image_idx_on[query.device] = self._image_idx.to(query.device)
        N = img.shape[1]
        if self.spec.heads == "all":
            image = probs.gather(-1, img[:, None, None, :].expand(B, H, r, N)).transpose(1, 2)  # (B, r, H, N)
        else:
            image = mean.gather(-1, img[:, None, :].expand(B, r, N))  # (B, r, N)
        full = mean if self.spec.store_rows else None
        self.chunks.append((layer, idx + (K - Q), sel[:, idx], mass, image, full))

    def result(self, row: int, sequence: "torch.Tensor | None" = None, limit: int | None = None) -> "AttentionRecord":
        """The AttentionRecord of batch row ``row`` in its own unpadded coordinates.

        sequence: LongTensor[T] token ids of the row (padded coordinates) for ``row_token_ids``; limit: keep only
        positions < limit (padded coordinates; drops rows fed after the sample's end of sequence in a batch).
        """
        import torch

        from vlmflow.record import AttentionRecord

        n_pad = int((self.roles.ids[row] == PAD).sum())
        n_img = len(self._image_pos[row])
        keep = []  # per chunk: (layer index, positions, row slice of mass / image / full)
        for layer, pos, sel, mass, image, full in self.chunks:
            k = sel[row] if limit is None else sel[row] & (pos < limit)
            keep.append((self.layers.index(layer), pos[k].cpu(), mass[row][k].cpu(), image[row][k][..., :n_img].cpu(),
                         None if full is None else full[row][k].cpu()))
        positions = torch.unique(torch.cat([c[1] for c in keep])) if keep else torch.zeros(0, dtype=torch.long)
        R, L = len(positions), len(self.layers)
        H = next((c[3].shape[1] for c in keep if c[3].ndim == 3), None)
        out_mass = torch.full((R, L, N_ROLES), float("nan"))
        out_image = torch.full((R, L, H, n_img) if H is not None else (R, L, n_img), float("nan"))
        width = max((int(c[4].shape[-1]) for c in keep if c[4] is not None), default=n_pad) - n_pad
        out_full = torch.zeros(R, L, width) if self.spec.store_rows else None
        for li, pos, mass, image, full in keep:  # one entry per (layer, forward): not per position
            if not len(pos):
                continue
            dst = torch.searchsorted(positions, pos)
            out_mass[dst, li] = mass
            out_image[dst, li] = image
            if out_full is not None:
                out_full[dst, li, : full.shape[-1] - n_pad] = full[:, n_pad:]
        # uniform baseline: share of each role among the keys 0..p (no padding) visible to row p
        role_k = self.roles.extended(int(positions.max()) + 1 if R else self.roles.prompt_length)[row].cpu()
        counts = torch.nn.functional.one_hot(role_k, N_ROLES).float().cumsum(0)
        counts[:, PAD] = 0
        share = counts[positions] / counts[positions].sum(-1, keepdim=True).clamp(min=1)
        if sequence is not None:
            seq = torch.as_tensor(sequence).cpu()
            tok = torch.where(positions < len(seq), seq[positions.clamp(max=len(seq) - 1)], -1)
        else:
            tok = torch.full((R,), -1, dtype=torch.long)
        return AttentionRecord(
            layers=tuple(self.layers), row_positions=positions - n_pad, row_token_ids=tok, role_mass=out_mass,
            key_share=share, image_map=out_image, image_positions=self._image_pos[row].cpu() - n_pad,
            heads=self.spec.heads, attention=out_full,
        )


def _causal(Q: int, K: int, device) -> "torch.Tensor":
    """BoolTensor[1, 1, Q, K]: query i (absolute position K - Q + i) sees keys 0..K - Q + i."""
    import torch

    q_pos = torch.arange(K - Q, K, device=device)[:, None]
    return (torch.arange(K, device=device)[None, :] <= q_pos)[None, None]


# ---- per-forward state --------------------------------------------------------------------------------------
class ForwardState:
    """What :func:`attention_forward` needs while a block of :func:`active` runs; masks cached per (Q, K)."""

    def __init__(self, roles: "TokenRoles", plan: KnockoutPlan | None, recorder: Recorder | None):
        self.roles = roles
        self.plan = plan
        self.recorder = recorder
        self._shape: tuple[int, int] | None = None
        self._role_k = None
        self._masks: dict[tuple[int, int], tuple[Any, Any, bool]] = {}
        self._sel = None
        self._sel_any = False

    def _for_shape(self, Q: int, K: int, B: int, device) -> None:
        if self._shape == (Q, K) and self._role_k is not None and self._role_k.device == device:
            return
        if B != self.roles.batch_size:
            raise VlmflowError(
                f"the model got a batch of {B} rows but the active token roles describe {self.roles.batch_size}; "
                f"prepare inputs and roles together (VLM.prepare)"
            )
        if K < self.roles.prompt_length and Q != K:
            raise UnsupportedAttentionError(
                f"attention call with {K} keys is shorter than the {self.roles.prompt_length}-token prompt: "
                f"chunked prefill is not supported"
            )
        self._shape = (Q, K)
        self._role_k = self.roles.extended(K).to(device)  # LongTensor[B, K]
        self._masks = {}
        self._sel = None

    def mask_for(self, layer: int, attention_mask, query, key):
        """(mask to use, changed): the incoming mask with this layer's knockout applied (unchanged if none bites)."""
        import torch

        B, _, Q, _ = query.shape
        K = key.shape[2]
        self._for_shape(Q, K, B, query.device)
        group = self.plan.layer_group[layer] if self.plan is not None and layer < self.plan.num_layers else -1
        if group < 0:
            return attention_mask, False
        cache_key = (group, id(attention_mask))
        hit = self._masks.get(cache_key)
        if hit is not None and hit[0] is attention_mask:
            return hit[1], hit[2]
        role_k = self._role_k
        role_q = role_k[:, K - Q:]
        table, terms = self.plan.group(group, query.device)  # (B, n_roles, n_roles) or None; position terms
        if table is not None:
            rows = torch.arange(B, device=query.device)[:, None, None]
            blocked = table[rows, role_q[:, :, None], role_k[:, None, :]]  # BoolTensor[B, Q, K]
        else:
            blocked = torch.zeros(B, Q, K, dtype=torch.bool, device=query.device)
        for tgt, cols in terms:  # tgt: [n_roles]; cols: [B, P] prompt columns (keys past the prompt never blocked)
            n = min(K, cols.shape[1])
            blocked[:, :, :n] |= tgt[role_q][:, :, None] & cols[:, None, :n]
        if not bool(blocked.any()):  # e.g. KO image->generated during the prefill: keep sdpa's own path
            out, changed = attention_mask, False
        else:
            base = _causal(Q, K, query.device) if attention_mask is None else attention_mask
            if base.dtype == torch.bool:
                out = base & ~blocked[:, None]
            else:
                out = torch.where(blocked[:, None], torch.finfo(base.dtype).min, base)
            changed = True
        self._masks[cache_key] = (attention_mask, out, changed)  # holding the input keeps its id unique
        return out, changed

    def record_selection(self, Q: int):
        if self._sel is None:
            self._sel = self.recorder.select(self._role_k, Q)
            self._sel_any = bool(self._sel.any())
        return self._sel, self._sel_any


def attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      is_causal=None, **kwargs):
    """The registered ``"vlmflow"`` attention: sdpa + knockout masks + row-selective recording.

    query: (B, H, Q, D); key/value: (B, Hkv, K, D); attention_mask: None, bool (True = attend) or additive float,
    (B|1, 1, Q, K). Returns (attn_output (B, Q, H, D), None) like ``sdpa_attention_forward``.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    state = _STATE.get()
    if state is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    layer = getattr(module, "layer_idx", None)
    if layer is None:
        raise UnsupportedAttentionError(
            f"{type(module).__name__} has no layer_idx: the vlmflow attention must be set on the language model only"
        )
    mask, _changed = state.mask_for(layer, attention_mask, query, key)
    out = sdpa_attention_forward(module, query, key, value, mask, dropout=dropout, scaling=scaling,
                                 is_causal=is_causal, **kwargs)
    rec = state.recorder
    if rec is not None and rec.wants(layer):
        sel, any_sel = state.record_selection(query.shape[2])
        if any_sel:
            rec.observe(layer, query, key, mask, scaling, state._role_k, sel)
    return out


@contextmanager
def active(roles: "TokenRoles", knockouts=None, record: "Record | None" = None, *,
           n_layers: int, layer_roles: "Sequence[TokenRoles] | None" = None) -> Iterator[ForwardState]:
    """Run the forwards inside the block with ``roles`` (one row per batch row), ``knockouts`` (see
    ``per_row_knockouts``) and ``record``. Yields the ForwardState; ``state.recorder.result(row)`` after the block.
    ``layer_roles``: the prompt keys' roles per decoder layer when a per-layer cache holds other positions in each
    layer (see ``compile_knockouts``).

    The model's language model must use the ``"vlmflow"`` attention (``VLM`` sets it)."""
    if layer_roles is not None and record is not None:
        raise VlmflowError("recording with per-layer roles is not supported: a record needs one layout")
    plan = compile_knockouts(knockouts, roles.batch_size, n_layers, roles, layer_roles=layer_roles)
    recorder = Recorder(record, roles, n_layers) if record is not None else None
    state = ForwardState(roles, plan, recorder)
    token = _STATE.set(state)
    try:
        yield state
    finally:
        _STATE.reset(token)


def check_implementation(impl: str, what: Sequence[str] = ("knockout", "record")) -> None:
    """Raise UnsupportedAttentionError unless the language model runs the vlmflow attention."""
    if impl != NAME:
        raise UnsupportedAttentionError(
            f"cannot {' / '.join(what)} with attention implementation {impl!r}: the language model must use "
            f"{NAME!r} (vf.wrap / vf.load set it; flash attention and static caches cannot be knocked out)"
        )


__all__ = ["NAME", "ForwardState", "KnockoutPlan", "Recorder", "active", "attention_forward", "check_implementation",
           "compile_knockouts", "ensure_registered", "per_row_knockouts"]
