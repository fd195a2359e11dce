"""Loading a VLM and running it under knockouts and recordings: ``load``, ``wrap``, ``VLM``, ``Generation``.

``load`` / ``wrap`` pick the architecture's adapter (``vlmflow.adapters``), register the ``"vlmflow"`` attention
(``vlmflow.attention``) and set it on the language model only. ``VLM`` then offers

  ``prepare(images, questions) -> Batch``                 processor output + TokenRoles (left-padded batch)
  ``forward(batch, knockout=..., record=...)``            one forward pass -> ForwardResult (logits, records)
  ``generate(images, question, knockout=..., record=..., force_prefix=...)`` greedy decoding -> Generation(s)
  ``prefill(batch, knockout=..., hidden_norms=...)``       the prompt pass of one row, kept for continuing -> Prefill
  ``eos_ids``                                             the token ids that end a generation

Knockouts may be one spec, a list applied together, or a per-row list of lists (see
``vlmflow.attention.per_row_knockouts``). Everything runs inside ``vlmflow.attention.active``, so transformers'
own ``generate`` with its DynamicCache is used unchanged. The sweep engine (``vlmflow.sweep``) and re-prompting
(``vlmflow.reprompt``) continue from ``prefill`` (prompt KV cache, the decoder's input embeddings and rotary
positions, last logits, image hidden-state norms) and stop on ``eos_ids``; positions of tokens appended later come
from the adapter (``Adapter.text_position_ids``), so neither names an architecture.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmflow.errors import (
    DeviceError,
    UnsupportedAttentionError,
    UnsupportedModelError,
    UsageError,
    VlmflowError,
    WeightsNotAvailableError,
)
from vlmflow.knockout import spec_id

if TYPE_CHECKING:
    import torch
    from transformers import BatchFeature

    from vlmflow.adapters.base import Adapter
    from vlmflow.adapters.geometry import ImageGeometry
    from vlmflow.plant import Plant
    from vlmflow.record import AttentionRecord, Record
    from vlmflow.roles import TokenRoles

DEFAULT_QUESTION = "describe the image"


def check_question(question, what: str = "question") -> str:
    """``question`` if it is a string with a non-blank character; UsageError otherwise (an empty prompt makes the
    model answer a question nobody asked)."""
    if not isinstance(question, str):
        raise UsageError(f"the {what} must be a string, got {type(question).__name__}")
    if not question.strip():
        raise UsageError(f"the {what} is empty: give the text the model should answer (e.g. 'describe the image')")
    return question


def check_max_new_tokens(max_new_tokens) -> int:
    """``max_new_tokens`` as an int >= 1; UsageError otherwise (0 would return empty texts as if they were answers)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise UsageError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
    return max_new_tokens


def toy_model_path() -> Path:
    """$VLMFLOW_TOY_MODEL, else the toy model shipped inside the package (``vlmflow/toy_model``: in a checkout a link
    to ``data/toy_model``, in an installed wheel a copy as package data), else the checkout's ``data/toy_model``.
    Never relative to the working directory, so ``vf.load("toy")`` works from anywhere."""
    env = os.environ.get("VLMFLOW_TOY_MODEL")
    if env:
        return Path(env)
    shipped = Path(__file__).resolve().parent / "toy_model"
    if (shipped / "config.json").is_file():
        return shipped.resolve()  # in a checkout: data/toy_model itself
    return Path(__file__).resolve().parents[2] / "data" / "toy_model"


TOY_PREFIX = "toy:"


def toy_models_dir() -> Path:
    """The folder of the extra shipped toy models (one sub-folder each, ``vf.load("toy:NAME")``):
    $VLMFLOW_TOY_MODELS, else the package's ``vlmflow/toy_models`` (in a checkout a link to ``data/toy_models``, in an
    installed wheel a copy as package data), else the checkout's ``data/toy_models``."""
    env = os.environ.get("VLMFLOW_TOY_MODELS")
    if env:
        return Path(env)
    shipped = Path(__file__).resolve().parent / "toy_models"
    if shipped.is_dir():
        return shipped.resolve()
    return Path(__file__).resolve().parents[2] / "data" / "toy_models"


def toy_models() -> dict[str, Path]:
    """The toy model registry: ``{"toy": the default model's folder, "toy:NAME": data/toy_models/NAME, ...}``, each a
    folder with a config.json (``vlmflow toy models`` lists them with their plant)."""
    out = {"toy": toy_model_path()}
    folder = toy_models_dir()
    if folder.is_dir():
        for sub in sorted(folder.iterdir()):
            if (sub / "config.json").is_file():
                out[TOY_PREFIX + sub.name] = sub
    return out


def is_toy_name(name) -> bool:
    return isinstance(name, str) and (name == "toy" or name.startswith(TOY_PREFIX))


def toy_model_folder(name: str) -> Path:
    """The folder of toy model ``name`` ("toy" or "toy:NAME"); WeightsNotAvailableError listing the valid names."""
    registry = toy_models()
    if name not in registry:
        raise WeightsNotAvailableError(f"unknown toy model {name!r}; valid toy models: {', '.join(registry)}")
    return registry[name]


def _torch_dtype(dtype):
    import torch

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    names = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}
    if dtype not in names:
        raise UsageError(f"unknown dtype {dtype!r}; use one of {', '.join(names)} or 'auto'")
    return names[dtype]


def available_devices() -> list[str]:
    """The devices this torch build can use here, e.g. ["cpu"] or ["cpu", "cuda:0", "cuda:1"]."""
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(device) -> None:
    """DeviceError unless ``device`` ("cpu", "cuda", "cuda:N", "mps", "auto", a torch.device or None) exists in
    this torch build on this machine; ``load`` calls it before any weights load."""
    if device is None or device in ("auto", "cpu"):  # always there; no torch import needed
        return
    import torch

    have = available_devices()
    valid = ", ".join(have) + " or auto"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"unknown device {device!r}; on this machine use {valid}") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise DeviceError(f"device {device!r}: torch {torch.__version__} ({build}) sees no CUDA device on this "
                              f"machine; use {valid}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                              f"use {valid}")
        return
    if str(dev) not in have and dev.type not in have:
        raise DeviceError(f"device {device!r} is not available to torch {torch.__version__} on this machine; use "
                          f"{valid}")


def model_source(name_or_path: str) -> str:
    """What ``load`` will read for ``name_or_path`` (the toy model's folder, a model folder, or a hub id whose weights
    are cached or downloadable); WeightsNotAvailableError naming the model and the way to get it otherwise. Cheap (no
    transformers import, at most one short connection attempt), so commands call it before any long work."""
    if is_toy_name(name_or_path):
        path = toy_model_folder(name_or_path)
        if not (path / "config.json").is_file():
            raise WeightsNotAvailableError(
                f"the toy model is not at {path}: build it with `vlmflow toy train --out {path}` or point "
                f"$VLMFLOW_TOY_MODEL at a trained toy model folder"
            )
        return str(path)
    source = str(name_or_path)
    if os.path.isdir(source):
        return source
    if os.path.exists(source) or source.startswith((".", "/", "~")):
        raise WeightsNotAvailableError(f"model folder {source} does not exist (or is not a folder); use 'toy', a "
                                       f"model folder or a Hugging Face model id")
    _check_hub_weights(source, _hub_offline())
    return source


def architecture(name_or_path: str) -> str:
    """The architecture of ``name_or_path`` (its ``config.model_type``, e.g. ``llava``, ``internvl``, ``qwen2_vl``)
    read from its config alone, without loading weights; a model that cannot be read (``model_source``'s errors, an
    unreadable config) or that no adapter serves is refused naming it. Pages that compare models call it for every
    model before any long work, so none is skipped or fails after the others have run."""
    source = model_source(name_or_path)
    from transformers import AutoConfig

    from vlmflow.adapters import supported

    try:
        model_type = AutoConfig.from_pretrained(source, local_files_only=os.path.isdir(source) or _hub_offline()).model_type
    except (OSError, ValueError) as exc:
        raise WeightsNotAvailableError(f"model {name_or_path!r}: its config cannot be read from {source} "
                                       f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if model_type not in supported():
        raise UnsupportedModelError(f"model {name_or_path!r} is a {model_type!r} model; the adapters serve "
                                    f"{', '.join(supported())}")
    return model_type


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def load(name_or_path: str, device: str = "cpu", dtype=None, plant: bool = True, **kw) -> "VLM":
    """Load "toy", "toy:NAME" (``vlmflow toy models``), a local folder or a hub id (AutoModelForImageTextToText +
    ``processors.load_processor``, which is AutoProcessor without the video processor where that cannot load) and
    wrap it.

    plant: apply the knockouts planted in the model (its folder's ``plant.json``, ``vlmflow.plant``) whenever it runs,
    as it was trained; False runs the bare weights (off the training distribution of a planted model).

    device: "cpu", "cuda" (or "cuda:N") or "auto" (accelerate ``device_map="auto"``); dtype: None (the checkpoint's),
    "float16", "bfloat16", "float32", "auto" or a torch dtype. Extra keywords go to ``from_pretrained``.
    The device, the dtype and (for a hub id) the weights' availability are checked before transformers is even
    imported, so a mistake costs seconds, not a model load or a minute of download retries.
    """
    source = model_source(name_or_path)  # no torch import: a mistyped id fails in well under a second
    check_device(device)
    torch_dtype = _torch_dtype(dtype)
    local = os.path.isdir(source)
    offline = _hub_offline() or local
    from transformers import AutoModelForImageTextToText

    from vlmflow.processors import load_processor

    model_kw = dict(kw)
    if torch_dtype is not None:
        model_kw["dtype"] = torch_dtype
    if device == "auto":
        model_kw["device_map"] = "auto"

    def _from_pretrained(local_only: bool):
        model = AutoModelForImageTextToText.from_pretrained(source, local_files_only=local_only, **model_kw)
        processor = load_processor(source, local_files_only=local_only)
        return model, processor

    try:
        model, processor = _from_pretrained(True)
    except (OSError, ValueError) as first:
        if offline:
            raise _not_available(source, first) from first
        try:
            model, processor = _from_pretrained(False)
        except (OSError, ValueError) as exc:  # no network, unknown repo, gated repo...
            raise _not_available(source, exc) from exc
    if device not in ("auto", None):
        model = model.to(device)
    from vlmflow.plant import read_plant

    planted = read_plant(source) if plant and local else None
    vlm = wrap(model, processor, name=str(name_or_path), plant=planted)
    vlm.requested = {"device": device, "dtype": dtype}  # what result keys name (vlmflow.runner.requested)
    return vlm


# The download command that this environment ships (huggingface_hub >= 1.0 installs `hf`; `huggingface-cli` is gone).
DOWNLOAD_COMMAND = "hf download"
HUB_CONNECT_TIMEOUT_S = 3.0


def _check_hub_weights(repo_id: str, offline: bool) -> None:
    """Fail fast on a hub id whose weights are not in the cache and cannot be fetched: an invalid id, offline mode,
    or no route to the hub (one TCP connect with a short timeout instead of transformers' retries with backoff)."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except HFValidationError as exc:
        raise WeightsNotAvailableError(f"model {repo_id!r} is neither 'toy', an existing model folder nor a valid "
                                       f"Hugging Face model id ({str(exc).splitlines()[0]})") from None
    if isinstance(cached, str):
        return
    where = f"the Hugging Face cache {constants.HF_HUB_CACHE}"
    fix = (f"check the spelling (or use 'toy' or a model folder); to get the weights run `{DOWNLOAD_COMMAND} "
           f"{repo_id}` where the network is reachable, or point HF_HOME at a cache that holds them")
    if offline:
        raise WeightsNotAvailableError(f"model {repo_id!r} is not in {where} and HF_HUB_OFFLINE is set: {fix}")
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return  # behind a proxy a direct connection says nothing; transformers will try through the proxy
    import socket
    from urllib.parse import urlparse

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise WeightsNotAvailableError(f"model {repo_id!r} is not in {where} and {host} cannot be reached "
                                       f"({exc.strerror or type(exc).__name__}): {fix}") from None


def _not_available(source: str, exc: Exception) -> WeightsNotAvailableError:
    if os.path.isdir(source):
        return WeightsNotAvailableError(f"cannot load the model folder {source}: "
                                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    why = str(exc).splitlines()[0] if str(exc) else ""
    if "RepositoryNotFound" in type(exc).__name__ or "404" in why:
        return WeightsNotAvailableError(f"no model {source!r} on the Hugging Face Hub (or it is private or gated): "
                                        f"check the id, or use 'toy' or a local model folder")
    return WeightsNotAvailableError(
        f"the weights of {source!r} are not in the local Hugging Face cache and could not be downloaded: run "
        f"`{DOWNLOAD_COMMAND} {source}` where the network is reachable, or point HF_HOME at a cache that holds them "
        f"({type(exc).__name__}: {why})"
    )


def wrap(model, processor, name: str | None = None, plant: "Plant | None" = None) -> "VLM":
    """Wrap an already loaded, supported transformers VLM: sets the vlmflow attention on its language model.
    ``plant``: knockouts applied on every run (``vlmflow.plant``; ``load`` reads them from the model folder)."""
    from vlmflow.adapters import adapter_for
    from vlmflow.attention import NAME, ensure_registered

    adapter = adapter_for(model, processor)
    ensure_registered()
    impl = adapter.text_attn_implementation()
    if impl.startswith("flash") or impl.startswith("paged"):
        # keep the user's fast kernel; knockout / record requests will raise UnsupportedAttentionError
        pass
    else:
        adapter.set_attention(NAME)
    model.eval()
    return VLM(model, processor, adapter, name=name or getattr(model, "name_or_path", None) or type(model).__name__,
               plant=plant)


@dataclass
class Batch:
    """A prepared, left-padded batch: processor output (on the model's device), roles and the original image sizes."""

    inputs: "BatchFeature"
    roles: "TokenRoles"
    image_sizes: list[tuple[int, int]]  # (W, H) of each original image
    questions: list[str]

    @property
    def prompt_length(self) -> int:
        return self.roles.prompt_length

    def __len__(self) -> int:
        return self.roles.batch_size


@dataclass
class ForwardResult:
    logits: "torch.Tensor"  # [B, T, vocab]
    records: "list[AttentionRecord] | None"
    output: Any  # the model's own output (hidden_states, past_key_values, ...)


@dataclass
class Generation:
    """One greedy generation. ``roles`` and ``record`` are in the sample's own unpadded coordinates."""

    text: str
    token_ids: list[int]  # generated tokens, end-of-sequence excluded
    roles: "TokenRoles"  # [1, prompt_length]
    prompt_length: int
    prompt_ids: list[int]
    question: str
    knockout: str  # spec id ("none" without knockout)
    finished: bool  # stopped on end-of-sequence (else max_new_tokens)
    record: "AttentionRecord | None" = None
    image_size: tuple[int, int] | None = None
    forced: list[int] = field(default_factory=list)  # the teacher-forced prefix, if any
    logits: "torch.Tensor | None" = None  # [steps, vocab] raw logits per generated step (return_logits=True)
    geometry: "ImageGeometry | None" = field(default=None, repr=False)  # image tokens -> original-pixel boxes
    geometry_error: str | None = field(default=None, repr=False)  # why there is no geometry, if there is none

    def heatmap(self, token: int, layer: int, *, heads="mean", row: str = "predicting", block=None):
        """float[H, W] in original pixels: generated token ``token``'s attention over the image tokens at decoder
        ``layer``, painted over each image token's box (``vlmflow.heatmap.token_heatmap``). ``row="predicting"``
        (the paper's) reads the row that outputs the token, which the default ``Record`` records; ``heads``: "mean",
        "max" or head indices (the last two need ``Record(heads="all")``)."""
        from vlmflow.heatmap import HeatmapError, token_heatmap

        if self.geometry is None:
            raise HeatmapError(f"this generation has no image geometry ({self.geometry_error or 'not computed'})")
        return token_heatmap(self.record, self.prompt_length, self.geometry, token, layer, heads, row, block)


@dataclass
class Prefill:
    """The prompt pass of one prepared row (no padding), kept so that work can continue after it.

    By causality any run whose changes start at prompt position ``b`` shares this pass's cache at positions ``< b``."""

    batch: Batch
    cache: Any  # DynamicCache over the P prompt positions (keys rotated at their own positions)
    embeds: "torch.Tensor | None"  # [1, P, hidden]: the decoder's inputs_embeds (image features merged)
    positions: "torch.Tensor"  # [1, P] or [rope_axes, 1, P]: the decoder's rotary position ids (Adapter)
    last_logits: "torch.Tensor"  # [vocab] float32 logits at the last prompt position
    image_norms: "torch.Tensor | None" = None  # [L, N_img] L2 norms of the image tokens' hidden state at each layer input

    @property
    def length(self) -> int:
        return self.batch.prompt_length

    @property
    def roles(self) -> "TokenRoles":
        return self.batch.roles

    @property
    def next_position(self) -> int:
        """The position id of the first token after the prompt: P for RoPE, P + rope delta for M-RoPE (the largest
        prompt position + 1, as the model's own decoding continues)."""
        return int(self.positions.max()) + 1


class _ForcePrefix:
    """LogitsProcessor: for generated step k < len(prefix[b]) only prefix[b][k] can be chosen (teacher forcing)."""

    def __init__(self, prefixes: list[list[int]], prompt_length: int):
        self.prefixes = prefixes
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        rows = [(b, p[step]) for b, p in enumerate(self.prefixes) if step < len(p)]
        if not rows:
            return scores
        scores = scores.clone()  # never write into the raw logits that generate may also return
        for b, token in rows:  # one entry per sample, not per position
            scores[b] = float("-inf")
            scores[b, token] = 0.0
        return scores


class VLM:
    """A supported VLM with its processor and adapter; see the module docstring."""

    def __init__(self, model, processor, adapter: "Adapter", name: str | None = None, plant: "Plant | None" = None):
        self.model = model
        self.processor = processor
        self.adapter = adapter
        self.name = name
        self.requested: dict = {}  # vlmflow.load's device and dtype arguments (empty for a wrapped model)
        self.plant = plant

    @property
    def planted(self) -> tuple:
        """The planted knockouts applied on every run (empty without a plant)."""
        return self.plant.knockouts if self.plant is not None else ()

    def active(self, roles: "TokenRoles", knockout=None, record: "Record | None" = None, *,
               layer_roles: "Sequence[TokenRoles] | None" = None):
        """``vlmflow.attention.active`` for this model: the caller's ``knockout`` plus the planted ones, on every
        row. Every forward of the library runs inside it (generate, forward, prefill, the sweep engine, the answer
        turn of re-prompting, which passes ``layer_roles`` for its per-layer compressed cache)."""
        from vlmflow.attention import active
        from vlmflow.plant import with_plant

        return active(roles, with_plant(knockout, self.planted, roles.batch_size), record, n_layers=self.num_layers,
                      layer_roles=layer_roles)

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def tokenizer(self):
        return self.adapter.tokenizer

    def __repr__(self) -> str:
        return f"VLM({self.name!r}, adapter={self.adapter.name}, layers={self.num_layers})"

    # ---- inputs ---------------------------------------------------------------------------------------------
    def prepare(self, images, questions: str | Sequence[str] = DEFAULT_QUESTION) -> Batch:
        """Images (one or a list: PIL / path / ndarray) and a question (or one per image) -> Batch on the device.
        A ``vlmflow.adapters.base.Video`` (one clip's frames) goes through the adapter's video input instead
        (``prepare_video``); a batch holds images or videos, not both."""
        from vlmflow.adapters.base import Video, load_image

        imgs = list(images) if isinstance(images, (list, tuple)) else [images]
        qs = [questions] * len(imgs) if isinstance(questions, str) else list(questions)
        if len(qs) != len(imgs):
            raise UsageError(f"{len(imgs)} images but {len(qs)} questions: give one question, or one per image")
        for q in qs:
            check_question(q)
        videos = [isinstance(im, Video) for im in imgs]
        if any(videos):
            if not all(videos):
                raise UsageError("a batch holds images or videos (vlmflow.adapters.base.Video), not both")
            prepare_video = getattr(self.adapter, "prepare_video", None)
            if prepare_video is None:
                raise UnsupportedModelError(f"model {self.name}: the {self.adapter.name} adapter has no video input; "
                                            f"videos run on Qwen2-VL models")
            pil = [v.load() for v in imgs]
            inputs, roles = prepare_video(pil, qs)
            sizes = [frames[0].size for frames in pil]
        else:
            pil = [load_image(im) for im in imgs]
            inputs, roles = self.adapter.prepare(pil, qs)
            sizes = [im.size for im in pil]
        inputs = inputs.to(self.device)
        dtype = next(self.model.parameters()).dtype
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs and inputs[key].is_floating_point():
                inputs[key] = inputs[key].to(dtype)
        return Batch(inputs, roles, sizes, qs)

    def _check(self, knockout, record, kwargs: dict | None = None) -> None:
        from vlmflow.attention import check_implementation

        if knockout is None and record is None and not self.planted:
            return
        check_implementation(self.adapter.text_attn_implementation())
        kwargs = kwargs or {}
        cache_impl = kwargs.get("cache_implementation") or getattr(self.model.generation_config,
                                                                   "cache_implementation", None)
        past = kwargs.get("past_key_values")
        if cache_impl in ("static", "offloaded_static", "sliding_window", "hybrid") or (
                past is not None and "Static" in type(past).__name__):
            raise UnsupportedAttentionError(
                f"cannot knock out or record with a static cache ({cache_impl or type(past).__name__}): its query "
                f"rows are not the last keys; use the default DynamicCache"
            )

    # ---- one forward pass -------------------------------------------------------------------------------------
    def forward(self, batch: Batch, knockout=None, record: "Record | None" = None, **kwargs) -> ForwardResult:
        """One forward over the prepared batch under ``knockout`` / ``record``; kwargs go to the model."""
        import torch

        self._check(knockout, record, kwargs)
        with torch.no_grad(), self.active(batch.roles, knockout, record) as state:
            out = self.model(**batch.inputs, **kwargs)
        records = None
        if record is not None:
            ids = batch.inputs["input_ids"]
            records = [state.recorder.result(b, ids[b].cpu()) for b in range(len(batch))]
        return ForwardResult(out.logits, records, out)

    @property
    def eos_ids(self) -> frozenset[int]:
        """The token ids that end a generation (``generation_config.eos_token_id``: one id or a list)."""
        eos = self.model.generation_config.eos_token_id
        return frozenset(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])

    # ---- the prompt pass, kept ----------------------------------------------------------------------------------
    def prefill(self, batch: Batch, knockout=None, hidden_norms: bool = False) -> Prefill:
        """Run the prompt of a one-row batch once under ``knockout`` (None: plain) and keep what continuing needs:
        the KV cache, the decoder's input embeddings and rotary positions (captured by a forward pre-hook on the
        language model, so they come from the model's own code, M-RoPE included), the last logits and, with
        ``hidden_norms``, the image tokens' hidden-state norms per layer input."""
        import torch

        if len(batch) != 1 or bool((batch.inputs["attention_mask"] == 0).any()):
            raise VlmflowError(f"prefill takes one unpadded row, got a batch of {len(batch)}")
        captured: dict[str, Any] = {}

        def grab(module, args, kwargs):
            captured["embeds"] = kwargs.get("inputs_embeds")
            captured["positions"] = kwargs.get("position_ids")

        handle = self.adapter.language_model().register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with torch.no_grad(), self.active(batch.roles, knockout):
                out = self.model(**batch.inputs, use_cache=True, logits_to_keep=1, output_hidden_states=hidden_norms)
        finally:
            handle.remove()
        cache = out.get("cache") if "cache" in out else out.get("past_key_values")  # renamed in transformers 5
        if cache is None:
            raise VlmflowError(f"model {self.name}: {type(self.model).__name__} returned no KV cache from the prefill")
        P = batch.prompt_length
        positions = self.adapter.decoder_positions(captured.get("positions"), P, device=self.device)
        norms = None
        if hidden_norms:  # hidden_states[l] is layer l's input: [1, P, hidden]
            img = batch.roles.positions("image", 0)
            norms = torch.stack([out.hidden_states[layer][0, img].float().norm(dim=-1)
                                 for layer in range(self.num_layers)]).cpu()
        return Prefill(batch, cache, captured.get("embeds"), positions, out.logits[0, -1].float(), norms)

    # ---- greedy generation ------------------------------------------------------------------------------------
    def generate(self, images, question: str | Sequence[str] = DEFAULT_QUESTION, knockout=None,
                 record: "Record | None" = None, max_new_tokens: int = 64, force_prefix=None,
                 return_logits: bool = False, **gen_kwargs):
        """Greedy decoding; returns a Generation for one image, a list of them for a list of images.

        knockout: a Knockout, a list applied together, or a per-row list of lists; force_prefix: token ids that the
        first generated tokens are forced to (one list for every row, or one list per row), greedy afterwards;
        return_logits: keep each step's raw logits (before forcing) in ``Generation.logits``.
        """
        single = not isinstance(images, (list, tuple))
        batch = self.prepare(images, question)
        gens = self.generate_batch(batch, knockout=knockout, record=record, max_new_tokens=max_new_tokens,
                                   force_prefix=force_prefix, return_logits=return_logits, **gen_kwargs)
        return gens[0] if single else gens

    def generate_batch(self, batch: Batch, knockout=None, record: "Record | None" = None, max_new_tokens: int = 64,
                       force_prefix=None, return_logits: bool = False, **gen_kwargs) -> list[Generation]:
        import torch

        from vlmflow.attention import per_row_knockouts
        from vlmflow.roles import TokenRoles

        self._check(knockout, record, gen_kwargs)
        check_max_new_tokens(max_new_tokens)
        B, P = len(batch), batch.prompt_length
        prefixes = _per_row_prefix(force_prefix, B)
        processors = list(gen_kwargs.pop("logits_processor", []) or [])
        if any(prefixes):
            processors.append(_ForcePrefix(prefixes, P))
        tok = self.tokenizer
        eos_ids = self.eos_ids
        pad = self.model.generation_config.pad_token_id
        if pad is None:
            pad = tok.pad_token_id if tok.pad_token_id is not None else min(eos_ids, default=0)
        with torch.no_grad(), self.active(batch.roles, knockout, record) as state:
            out = self.model.generate(**batch.inputs, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                      logits_processor=processors or None, pad_token_id=pad,
                                      return_dict_in_generate=True, output_logits=return_logits, **gen_kwargs)
        seq = out.sequences.cpu()
        step_logits = torch.stack(out.logits, 1) if return_logits else None  # [B, steps, vocab]
        rows = per_row_knockouts(knockout, B)
        gens = []
        for b in range(B):
            new = seq[b, P:].tolist()
            n = len(new)
            finished = False
            for i, t in enumerate(new):
                if t in eos_ids:
                    n, finished = i, True
                    break
            ids = new[:n]
            # positions fed back to the model for this sample: P .. P + (tokens produced incl. eos) - 2
            produced = n + 1 if finished else n
            rec = state.recorder.result(b, seq[b], limit=P + produced - 1) if record is not None else None
            n_pad = int((batch.inputs["attention_mask"][b] == 0).sum())
            frames = batch.roles.frames
            roles = TokenRoles(batch.roles.ids[b:b + 1, n_pad:], P - n_pad,
                               None if frames is None else frames[b:b + 1, n_pad:])
            geometry, geometry_error = self._geometry(batch, b)
            gens.append(Generation(
                text=tok.decode(ids, skip_special_tokens=True).strip(), token_ids=ids, roles=roles,
                prompt_length=P - n_pad, prompt_ids=seq[b, n_pad:P].tolist(), question=batch.questions[b],
                knockout=spec_id(rows[b]), finished=finished, record=rec, image_size=batch.image_sizes[b],
                forced=list(prefixes[b]), logits=None if step_logits is None else step_logits[b, :produced],
                geometry=geometry, geometry_error=geometry_error,
            ))
        return gens

    def _geometry(self, batch: Batch, row: int) -> "tuple[ImageGeometry | None, str | None]":
        """(the adapter's image geometry of ``row``, None) or (None, why not): a generation never fails for it."""
        from vlmflow.adapters.geometry import GeometryError

        try:
            return self.adapter.geometry(batch.image_sizes[row], batch.inputs, row), None
        except (GeometryError, NotImplementedError) as exc:
            return None, f"{type(exc).__name__}: {exc}"


def _per_row_prefix(force_prefix, batch_size: int) -> list[list[int]]:
    if force_prefix is None:
        return [[] for _ in range(batch_size)]
    items = list(force_prefix)
    if all(isinstance(t, int) for t in items):
        return [list(items) for _ in range(batch_size)]
    if len(items) != batch_size:
        raise VlmflowError(f"force_prefix: got {len(items)} per-row prefixes for a batch of {batch_size}")
    return [list(p or []) for p in items]
