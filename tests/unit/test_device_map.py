"""Big-model loading: ``vf.load(folder, device="auto")`` (accelerate ``device_map``) keeps the vlmflow attention path.

A tiny LLaVA is saved to a temporary folder and loaded with a ``max_memory`` budget that leaves room on "cpu" for the
vision tower, the embeddings and part of the language model, so accelerate offloads the remaining decoder layers,
the final norm and the head to "disk" (``offload_folder``; weights are loaded back layer by layer by accelerate's
hooks at each forward). Greedy tokens, logits, knockout outputs, recorded attention and a sweep must equal the plain
CPU model's exactly (same weights, same kernels: offloading only moves tensors)."""
import numpy as np
import pytest
import torch

import vlmflow as vf
from tests.tiny import build
from vlmflow.presets import preset
from vlmflow.sweep import SweepEngine

Q = "describe the image"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    pytest.importorskip("accelerate")
    folder = tmp_path_factory.mktemp("tiny_llava")
    model, processor = build("llava")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    layers = sum(p.numel() * p.element_size() for p in model.model.language_model.layers.parameters())
    plain = vf.load(str(folder), device="cpu")
    split = vf.load(str(folder), device="auto", max_memory={"cpu": int(total - 0.5 * layers)},
                    offload_folder=str(folder / "offload"))
    return plain, split


def test_language_model_layers_are_split_between_cpu_and_disk(pair):
    _, split = pair
    placement = split.model.hf_device_map
    layer_devices = {dev for name, dev in placement.items() if ".layers." in name}
    assert layer_devices == {"cpu", "disk"}, placement
    assert split.adapter.text_attn_implementation() == "vlmflow"


def test_offloaded_model_generates_knocks_out_and_records_like_the_cpu_model(pair):
    plain, split = pair
    image = (np.random.RandomState(0).rand(40, 30, 3) * 255).astype("uint8")
    record = vf.Record(rows=("last_prompt", "generated"))
    outs = {}
    for ko in (None, vf.Knockout("image", "text"), vf.Knockout("image", ("text", "generated"), [1, 3])):
        a = plain.generate(image, Q, knockout=ko, record=record, max_new_tokens=6, return_logits=True)
        b = split.generate(image, Q, knockout=ko, record=record, max_new_tokens=6, return_logits=True)
        assert a.token_ids == b.token_ids, ko
        torch.testing.assert_close(b.logits, a.logits, atol=1e-6, rtol=0)
        torch.testing.assert_close(b.record.role_mass, a.record.role_mass, atol=1e-6, rtol=0)
        outs[str(ko)] = a.token_ids
    assert len(set(map(tuple, outs.values()))) > 1, "the knockouts do not change the output: the check is vacuous"


def test_sweep_engine_on_the_offloaded_model(pair):
    plain, split = pair
    image = (np.random.RandomState(1).rand(40, 30, 3) * 255).astype("uint8")
    configs = preset("from-layer", plain.num_layers)
    want = SweepEngine(plain, max_new_tokens=6).run(image, configs, Q)
    got = SweepEngine(split, max_new_tokens=6).run(image, configs, Q)
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
