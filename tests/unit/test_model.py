"""load / wrap / generate: folders and the toy path, offline errors, image inputs, force_prefix, the describe CLI."""
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import vlmflow as vf
from tests.oracles import random_image as _image
from tests.tiny import build
from vlmflow.errors import ImageReadError, UnsupportedModelError, WeightsNotAvailableError


@pytest.fixture(scope="module")
def tiny():
    return build("llava")


@pytest.fixture(scope="module")
def vlm(tiny):
    return vf.wrap(*tiny)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny):
    folder = tmp_path_factory.mktemp("tiny_llava")
    model, processor = build("llava")  # a fresh copy: saving must not depend on the wrapped one
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_wrap_sets_vlmflow_on_the_language_model_only(vlm):
    cfg = vlm.model.config
    assert cfg.text_config._attn_implementation == "vlmflow"
    assert cfg.vision_config._attn_implementation == "sdpa"
    assert vlm.model.model.vision_tower.config._attn_implementation == "sdpa"
    assert vlm.num_layers == cfg.text_config.num_hidden_layers


def test_load_folder_and_toy_path_reproduce_logits(saved, vlm, monkeypatch):
    batch = vlm.prepare(_image(0))
    want = vlm.forward(batch).logits
    loaded = vf.load(str(saved))
    torch.testing.assert_close(loaded.forward(loaded.prepare(_image(0))).logits, want, atol=1e-6, rtol=0)
    monkeypatch.setenv("VLMFLOW_TOY_MODEL", str(saved))
    toy = vf.load("toy")
    assert toy.adapter.name == "llava"
    assert toy.generate(_image(0), max_new_tokens=4).token_ids == vlm.generate(_image(0), max_new_tokens=4).token_ids


def test_missing_weights_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotAvailableError, match="llava-hf/llava-1.5-7b-hf") as err:
        vf.load("llava-hf/llava-1.5-7b-hf")
    assert "`hf download llava-hf/llava-1.5-7b-hf`" in str(err.value)
    assert (Path(sys.executable).parent / "hf").is_file(), "the message names `hf`, which this environment must ship"
    monkeypatch.setenv("VLMFLOW_TOY_MODEL", str(tmp_path / "nowhere"))
    with pytest.raises(WeightsNotAvailableError, match="nowhere"):
        vf.load("toy")


def test_unsupported_architecture_lists_supported(tiny):
    model, processor = tiny
    fake = types.SimpleNamespace(config=types.SimpleNamespace(model_type="gpt2"))
    with pytest.raises(UnsupportedModelError, match="'gpt2'") as err:
        vf.wrap(fake, processor)
    assert "llava" in str(err.value)


def test_image_inputs_path_array_pil_agree_and_bad_files_are_named(vlm, tmp_path):
    from PIL import Image

    arr = (np.random.RandomState(1).rand(40, 30, 3) * 255).astype(np.uint8)
    path = tmp_path / "scene.png"
    Image.fromarray(arr).save(path)
    outs = [vlm.generate(x, max_new_tokens=3).token_ids for x in (arr, str(path), Image.open(path))]
    assert outs[0] == outs[1] == outs[2]
    with pytest.raises(ImageReadError, match="missing.png"):
        vlm.generate(str(tmp_path / "missing.png"))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        vlm.generate(str(bad))


def test_list_of_images_returns_one_generation_each(vlm):
    gens = vlm.generate([_image(2), _image(3)], max_new_tokens=3)
    assert isinstance(gens, list) and len(gens) == 2
    assert gens[1].token_ids == vlm.generate(_image(3), max_new_tokens=3).token_ids
    assert gens[0].text == vlm.tokenizer.decode(gens[0].token_ids, skip_special_tokens=True).strip()


def test_force_prefix_teacher_forces_then_decodes_greedily(vlm):
    image = _image(4)
    free = vlm.generate(image, max_new_tokens=6, return_logits=True)
    same = vlm.generate(image, max_new_tokens=6, return_logits=True, force_prefix=free.token_ids[:3])
    assert same.token_ids == free.token_ids
    torch.testing.assert_close(same.logits, free.logits, atol=1e-6, rtol=0)
    vocab = vlm.tokenizer.get_vocab()
    prefix = [vocab["red"], vocab["circle"]]
    forced = vlm.generate(image, max_new_tokens=6, force_prefix=prefix)
    assert forced.token_ids[:2] == prefix and forced.forced == prefix
    # after the prefix: greedy, i.e. each token is the argmax of a fresh forward over prompt + tokens so far
    batch = vlm.prepare(image)
    seq = batch.inputs["input_ids"]
    for t in forced.token_ids:
        if seq.shape[1] - batch.prompt_length >= len(prefix):
            with torch.no_grad():
                logits = vlm.model(input_ids=seq, pixel_values=batch.inputs["pixel_values"]).logits[0, -1]
            assert int(logits.argmax()) == t
        seq = torch.cat([seq, torch.tensor([[t]])], 1)
    # per-row prefixes in a batch
    rows = vlm.generate([image, image], max_new_tokens=4, force_prefix=[prefix, []])
    assert rows[0].token_ids[:2] == prefix and rows[1].token_ids == free.token_ids[:4]


def test_describe_cli_prints_json(saved, monkeypatch, capsys, tmp_path):
    from PIL import Image

    from vlmflow.cli import main

    path = tmp_path / "img.png"
    Image.fromarray((np.random.RandomState(5).rand(32, 32, 3) * 255).astype(np.uint8)).save(path)
    assert main(["describe", "--model", str(saved), "--image", str(path), "--max-new-tokens", "4", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["describe", "--model", str(saved), "--image", str(path), "--max-new-tokens", "4", "--json",
                 "--knockout", "image:generated@0-3"]) == 0
    ko = json.loads(capsys.readouterr().out)
    vlm = vf.load(str(saved))
    want = vlm.generate(str(path), max_new_tokens=4, knockout=vf.Knockout.parse("image:generated@0-3"))
    assert ko["token_ids"] == want.token_ids and ko["text"] == want.text
    assert len(plain["token_ids"]) == 4 and plain["token_ids"][0] == ko["token_ids"][0]
    assert main(["describe", "--model", str(saved), "--image", str(tmp_path / "nope.png"), "--json"]) == 2
    assert "nope.png" in capsys.readouterr().err
