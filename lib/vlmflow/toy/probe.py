"""Token probe for the toy model's vision pretraining (used by ``train.py``; never part of the exported model).

Real LLaVA starts from a pretrained CLIP tower and a projector aligned to the LLM's word embeddings; the toy model
starts from scratch, and trained end to end through the language model alone it learned colour and count but never
shape (the one nonlinear, multi-token feature of a scene). The probe supplies both missing pieces: for every image
token as the language model receives it (the projector output, caught by ``ProjectorTap``) it classifies the
shape, colour and size of the object under that token (``token_targets``, exact from the scene masks), with class
vectors that are the language model's own embeddings of the words ``circle`` ... ``red`` ... ``large`` (plus a
learned background vector per head). Training it therefore makes each image token point toward the words that name
its object. That made shape readable (description F1 0.23 -> 0.998).

Scores are cosines times a learned scale (``cosine=True``, the default since toy model v3). With plain dot products
the projector met the objective by growing its outputs (norm ~2,600 against word embeddings of ~1.5) while their
*direction* stayed far from the words (cosine with the right shape word 0.11, with any shape word 0.06); with cosines
the image token of a red circle lies close to ``red`` and ``circle`` (0.52-0.58 after 4 minutes of stage 1, 0.05 for
the other words), which is what lets a question word find it by similarity (``train.mimetic_init``).

Position heads (``POSITION_HEADS``, ``TrainConfig.probe_position``): the row word and the column word of the object's
position (``top`` / ``center`` / ``bottom``, ``left`` / ``center`` / ``right``). A tower with learned absolute position
embeddings (the LLaVA toy's CLIP) writes where a token is into the token; Qwen2-VL's tower has rotary positions only,
and M-RoPE gives the language model almost no signal across the width (``diagnostics/position_axes.py``), so the toy
Qwen2-VL barely knows left from right. These heads ask the tower to write the object's place into its tokens, the job
that grounding data (boxes in text) does for a real Qwen2-VL.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vlmflow.toy.scenes import COLORS, COLUMN_WORDS, ROW_WORDS, SHAPES, SIZES, covered_tokens, position_axes

Heads = tuple[tuple[str, tuple[str, ...]], ...]  # (name, class words) per probe head
HEADS: Heads = (("shape", SHAPES), ("color", tuple(COLORS)), ("size", SIZES))
POSITION_HEADS: Heads = (("row", ROW_WORDS), ("column", COLUMN_WORDS))
QUESTION_HEADS: Heads = HEADS[:2]  # the words a question names its object by: shape and colour
IGNORED = -100  # cross-entropy's ignore index: a target the loss skips


def _head_word(obj, head: str) -> str:
    """The word that names ``obj`` (a placed SceneObject) for a probe head."""
    if head == "row":
        return position_axes(obj.position)[0]
    if head == "column":
        return position_axes(obj.position)[1]
    return getattr(obj.object, head)


def token_targets(scene, grid: int, heads: Heads = HEADS) -> np.ndarray:
    """int64[len(heads), grid*grid]: per head, the class (1-based index of the word) of the object under each image
    token, row-major, 0 where no object pixel falls in the token: (shape, colour, size) by default, then the row and
    column words of its position with ``HEADS + POSITION_HEADS``. Scene cells are whole multiples of a token, so at
    most one object per token."""
    out = np.zeros((len(heads), grid * grid), dtype=np.int64)
    for o in scene.objects:
        covered = covered_tokens(o.mask, grid)
        for k, (head, words) in enumerate(heads):
            out[k, covered] = words.index(_head_word(o, head)) + 1
    return out


def question_targets(questions: list[str], heads: Heads = QUESTION_HEADS) -> np.ndarray:
    """int64[len(questions), len(heads), 1]: per question and head, the class (1-based index of the word) of the
    head's word that the question names ("is there a red circle ?": ``circle``, ``red``), ``IGNORED`` where it names
    none (a description asks for no object; a count names the plural, another token)."""
    out = np.full((len(questions), len(heads), 1), IGNORED, dtype=np.int64)
    for i, question in enumerate(questions):
        words = question.split()
        for k, (_, head_words) in enumerate(heads):
            named = [w for w in words if w in head_words]
            if len(named) == 1:
                out[i, k, 0] = head_words.index(named[0]) + 1
    return out


class TokenProbe(torch.nn.Module):
    """Per head: logits [.., 1 + n_words] = scale * cos(features, [background; embedding(words)]) + bias
    (``cosine=False``: the plain dot product instead of scale * cosine). The scale is learned, or fixed by ``scale``:
    a learned scale grows until a small margin of cosine between a token's own word and the others is enough, a fixed
    one keeps the loss asking for a margin (``TrainConfig.probe_scale``).

    The embedding matrix is read from the model at every call and is *not* a parameter of the probe, so optimising
    ``probe.parameters()`` alone leaves the language model untouched (stage 1) while the joint stage trains both."""

    def __init__(self, model, tokenizer, cosine: bool = True, heads: Heads = HEADS, balanced: bool = False,
                 scale: float | None = None):
        super().__init__()
        self.cosine = cosine
        self.balanced = balanced
        self.heads = heads
        hidden = model.get_input_embeddings().weight.shape[1]
        self._model = [model]  # a list: not registered as a submodule
        ids = [tokenizer.convert_tokens_to_ids(list(words)) for _, words in heads]
        missing = [w for (_, words), i in zip(heads, ids) for w, t in zip(words, i) if t == tokenizer.unk_token_id]
        if missing:
            raise ValueError(f"token probe: {', '.join(missing)} missing from the tokenizer's vocabulary")
        for k, i in enumerate(ids):
            self.register_buffer(f"word_ids_{k}", torch.tensor(i), persistent=False)
        self.background = torch.nn.Parameter(torch.zeros(len(heads), hidden))
        self.bias = torch.nn.Parameter(torch.zeros(len(heads), 1 + max(len(i) for i in ids)))
        if scale is None:
            self.log_scale = torch.nn.Parameter(torch.tensor(float(np.log(10.0))))  # used when cosine
        else:
            if not cosine or scale <= 0:
                raise ValueError(f"token probe: a fixed scale needs cosine scores and a positive value, got {scale}")
            self.register_buffer("log_scale", torch.tensor(float(np.log(scale))))

    def logits(self, features: torch.Tensor, head: int) -> torch.Tensor:
        emb = self._model[0].get_input_embeddings().weight
        classes = torch.cat([self.background[head][None], emb[getattr(self, f"word_ids_{head}")]]).to(features.dtype)
        if self.cosine:
            scores = F.normalize(features, dim=-1) @ F.normalize(classes, dim=-1).T * self.log_scale.exp()
        else:
            scores = features @ classes.T
        return scores + self.bias[head, :classes.shape[0]]

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the heads. features [B, N, hidden], targets [B, len(heads), N] (-100: ignored).
        ``balanced``: per head, the mean over the classes present of each class's mean cross-entropy, so a rare
        class (the few tokens where a clip changed) weighs as much as the background."""
        return sum(self._head_loss(self.logits(features, k).flatten(0, 1), targets[:, k].flatten())
                   for k in range(len(self.heads))) / len(self.heads)

    def _head_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.balanced:
            return F.cross_entropy(logits, target)
        ce = F.cross_entropy(logits, target, reduction="none")  # 0 at ignored tokens
        present = target.unique()
        present = present[present >= 0]
        if not len(present):  # every token ignored (an attribute head on a batch without changes)
            return logits.sum() * 0
        return torch.stack([ce[target == c].mean() for c in present]).mean()

    @torch.no_grad()
    def object_token_accuracy(self, features: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        on_object = targets[:, 0] > 0
        return {name: float((self.logits(features, k).argmax(-1) == targets[:, k])[on_object].float().mean())
                for k, (name, _) in enumerate(self.heads)}

    @torch.no_grad()
    def _object_token_cosines(self, features: torch.Tensor, targets: torch.Tensor):
        """Per head: (name, cosine [n_object_tokens, n_words] of every object token with each of the head's words,
        own cosine [n_object_tokens] with the word naming the token's object). Background tokens are left out."""
        emb = self._model[0].get_input_embeddings().weight
        on_object = targets[:, 0] > 0
        unit = F.normalize(features[on_object], dim=-1)  # [n_object_tokens, hidden]
        for k, (name, _) in enumerate(self.heads):
            words = F.normalize(emb[getattr(self, f"word_ids_{k}")], dim=-1).to(unit.dtype)  # [n_words, hidden]
            cos = unit @ words.T
            yield name, cos, cos.gather(1, (targets[:, k][on_object] - 1)[:, None])[:, 0]

    def object_token_cosine(self, features: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Per head, the mean cosine of each object token with the embedding of the word that names its object
        (``circle``, ``red``, ...): how strongly a question word can find the token by similarity. Accuracy alone
        hides a weak alignment (the learned scale makes a small margin enough for the argmax)."""
        return {name: float(own.mean()) for name, _, own in self._object_token_cosines(features, targets)}

    def object_token_margin(self, features: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Per head, the mean over object tokens of the cosine with the word naming the token's object minus the mean
        cosine with the head's other words: what a question word's similarity can tell apart. A token can lie close
        to its own word and almost as close to the others (the words drawn together), which the cosine alone hides."""
        return {name: float((own - (cos.sum(1) - own) / (cos.shape[1] - 1)).mean())
                for name, cos, own in self._object_token_cosines(features, targets)}


class ForgetfulTap:
    """A forward-hook holder whose deep copy keeps nothing: ``copy.deepcopy(model)`` (export) reaches the holder
    through the hook, and what it holds may carry the autograd graph of the last step (non-leaf tensors cannot be
    deep-copied). Every attribute of the copy is None."""

    def __deepcopy__(self, memo):
        empty = type(self).__new__(type(self))
        empty.__dict__.update(dict.fromkeys(self.__dict__))
        return empty


class ProjectorTap(ForgetfulTap):
    """Keeps the last output of the projector (the image tokens as the LM receives them), with gradients: LLaVA's
    ``multi_modal_projector`` by default, or ``module`` (``toy/architectures.py``: Qwen2-VL's merger, whose output
    [B * N, hidden] is reshaped to [B, N, hidden] with ``tokens_per_image``)."""

    def __init__(self, model, module=None, tokens_per_image: int | None = None):
        self.features = None
        self.tokens_per_image = tokens_per_image
        module = model.model.multi_modal_projector if module is None else module
        self._handle = module.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output):
        self.features = output

    def take(self) -> torch.Tensor:
        """The kept features, released from the tap (so no autograd graph outlives the step)."""
        features, self.features = self.features, None
        if features is not None and features.ndim == 2 and self.tokens_per_image:
            features = features.reshape(-1, self.tokens_per_image, features.shape[-1])
        return features

    def remove(self):
        if self._handle is not None:
            self._handle.remove()


class LayerTap(ForgetfulTap):
    """Keeps the last output of language-model layer ``layer``, with gradients (``hidden`` [B, T, hidden]); the
    subclasses' ``take`` picks the positions a probe reads and releases it. The hook fires on every forward, so an
    export between steps meets a held tensor: a copy keeps nothing (``ForgetfulTap``)."""

    def __init__(self, model, layer: int):
        self.hidden = None
        self._handle = model.model.language_model.layers[layer].register_forward_hook(self._keep)

    def _keep(self, module, inputs, output):
        self.hidden = output[0] if isinstance(output, tuple) else output

    def remove(self):
        self._handle.remove()


class AnswerTap(LayerTap):
    """The question probe's tap (``LayerTap`` on layer ``layer``): ``take(labels)``
    -> [B, 1, hidden] at each sequence's answer position, the last prompt token (the one whose logits give the first
    answer token; ``labels`` [B, T] are -100 on the prompt). The layer may have run on the positions after a shared
    prefix only (``train.forward_loss`` with ``share_prefix``): the kept output then covers the last positions."""

    def take(self, labels: torch.Tensor) -> torch.Tensor:
        hidden, self.hidden = self.hidden, None
        answer_position = (labels != IGNORED).int().argmax(1) - 1  # [B]: before the first answer token
        offset = labels.shape[1] - hidden.shape[1]
        rows = torch.arange(hidden.shape[0])
        return hidden[rows, answer_position - offset][:, None]
