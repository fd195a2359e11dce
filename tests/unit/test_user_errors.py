"""Library-level refusals of bad input (the command-line catalogue is tests/integration/test_cli_errors.py): image
arrays, devices, knockouts that empty a row of keys (against a brute-force oracle) or block nothing, empty questions
and zero token budgets, unknown notebook parameters, the exact judge's vocabulary, output folders, and the help text
of every command."""
from __future__ import annotations

import argparse
import itertools
import random
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vlmflow.adapters.base import MAX_PIXELS, MIN_SIDE, load_image
from vlmflow.errors import DeviceError, ImageReadError, UsageError, VlmflowWarning


# ---- image arrays -------------------------------------------------------------------------------------------
def test_float_array_in_0_255_is_refused_not_clipped():
    arr = np.full((32, 32, 3), 200.0)
    arr[0, 0] = 0.0
    with pytest.raises(ImageReadError, match=r"values 0\.\.200: .*\[0, 1\].*divide by 255"):
        load_image(arr)


def test_valid_arrays_convert_exactly():
    rng = np.random.RandomState(0)
    floats = rng.rand(20, 30, 3)
    want = (floats * 255).round().astype(np.uint8)  # oracle: the documented [0, 1] -> 0..255 mapping
    assert np.array_equal(np.asarray(load_image(floats)), want)
    ints = rng.randint(0, 256, size=(20, 30, 3)).astype(np.int64)
    assert np.array_equal(np.asarray(load_image(ints)), ints.astype(np.uint8))
    grey = rng.randint(0, 256, size=(20, 30, 1)).astype(np.uint8)
    assert np.array_equal(np.asarray(load_image(grey)), np.repeat(grey, 3, axis=2))


@pytest.mark.parametrize("arr, words", [
    (np.full((20, 20, 3), np.nan), "NaN"),
    (np.full((20, 20, 3), -0.5), "[0, 1]"),
    (np.full((20, 20, 3), -5, dtype=np.int16), "0..255"),
    (np.full((20, 20, 3), 300, dtype=np.int32), "0..255"),
    (np.ones((20, 20, 3), dtype=bool), "dtype bool"),
    (np.zeros((3, 20, 20), dtype=np.uint8), "channels first"),
    (np.zeros((20, 20, 2), dtype=np.uint8), "C = 1, 3 or 4"),
    (np.zeros((20,), dtype=np.uint8), "shape (20,)"),
], ids=["nan", "negative-float", "negative-int", "int-over-255", "bool", "channels-first", "two-channels", "1-d"])
def test_bad_arrays_name_the_problem(arr, words):
    with pytest.raises(ImageReadError, match="image array") as err:
        load_image(arr)
    assert words in str(err.value)


def test_size_limits_are_named_and_exact():
    load_image(np.zeros((MIN_SIDE, MIN_SIDE, 3), dtype=np.uint8))  # the smallest accepted image
    with pytest.raises(ImageReadError, match=f"at least {MIN_SIDE} px"):
        load_image(np.zeros((MIN_SIDE, MIN_SIDE - 1, 3), dtype=np.uint8))
    with pytest.raises(ImageReadError, match="1x1 px"):
        load_image(Image.new("RGB", (1, 1)))
    big = Image.new("1", (8000, 8000))  # 64 MP; mode "1" keeps the test's memory small
    with pytest.raises(ImageReadError, match=f"8000x8000 px .*limit is {MAX_PIXELS / 1e6:.0f} MP"):
        load_image(big)


# ---- devices ------------------------------------------------------------------------------------------------
def test_device_is_checked_against_torch():
    from vlmflow.model import available_devices, check_device

    for ok in ("cpu", "auto", None, *available_devices()):
        check_device(ok)
    with pytest.raises(DeviceError, match="'tpu9'.*cpu"):
        check_device("tpu9")
    if torch.cuda.is_available():
        with pytest.raises(DeviceError, match="cuda:99"):
            check_device("cuda:99")
    else:
        with pytest.raises(DeviceError, match="no CUDA device"):
            check_device("cuda")


# ---- knockouts ----------------------------------------------------------------------------------------------
def _roles(rows: list[list[str]]):
    from vlmflow.roles import ROLE_ID, TokenRoles

    P = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (P - len(r)) + [ROLE_ID[n] for n in r] for r in rows])
    return TokenRoles(ids, P)


def _empties_a_row(rows, specs_per_row, n_layers) -> bool:
    """Brute force: is there a layer and a query (prompt position, or the first generated one) whose every visible
    key (non-pad, at or before it) is blocked by one of its row's specs?"""
    from vlmflow.roles import resolve

    for b, names in enumerate(rows):
        seq = names + ["generated"]
        for layer, q in itertools.product(range(n_layers), range(len(seq))):
            blocked_all = True
            for k in range(q + 1):
                hit = False
                for ko in specs_per_row[b]:
                    in_layer = ko.layers is None or layer in ko.layers
                    src = seq[k] in resolve(ko.source) and (ko.source_positions is None or k in ko.source_positions)
                    if in_layer and src and seq[q] in resolve(ko.target):
                        hit = True
                if not hit:
                    blocked_all = False
                    break
            if blocked_all:
                return True
    return False


def test_empty_row_check_matches_a_brute_force_oracle():
    from vlmflow.attention import compile_knockouts
    from vlmflow.knockout import Knockout, KnockoutError

    rng = random.Random(0)
    names = ["bos", "system", "user", "image", "query", "assistant", "generated", "text", "prompt", "all", "template"]
    layouts = [["bos", "system", "user", "image", "image", "query", "assistant"],
               ["bos", "user", "image", "query", "query", "assistant"],
               ["system", "user", "image", "image", "query", "assistant"]]  # no bos (Qwen-like)
    refused = accepted = 0
    for _ in range(300):
        rows = rng.sample(layouts, 2)
        specs = []
        for _ in range(rng.randint(1, 2)):
            layers = None if rng.random() < 0.5 else tuple(sorted(rng.sample(range(3), rng.randint(1, 3))))
            positions = None if rng.random() < 0.7 else tuple(sorted(rng.sample(range(6), rng.randint(1, 3))))
            specs.append(Knockout(rng.choice(names), rng.choice(names), layers, positions))
        per_row = [specs, specs]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VlmflowWarning)
            try:
                compile_knockouts(per_row, 2, 3, _roles(rows))
                raised = False
            except KnockoutError:
                raised = True
        assert raised == _empties_a_row([r for r in rows], per_row, 3), (rows, [k.spec_id for k in specs])
        refused += raised
        accepted += not raised
    assert refused > 20 and accepted > 20  # both outcomes exercised


def test_all_all_is_refused_with_the_reason_and_image_all_is_not():
    from vlmflow.attention import compile_knockouts
    from vlmflow.knockout import Knockout, KnockoutError

    roles = _roles([["bos", "system", "user", "image", "query", "assistant"]])
    with pytest.raises(KnockoutError, match="all:all@all leaves the bos token at prompt position 0 with no key"):
        compile_knockouts(Knockout.parse("all:all"), 1, 2, roles)
    assert compile_knockouts(Knockout.parse("image:all"), 1, 2, roles) is not None


def test_a_knockout_that_blocks_nothing_is_reported():
    from vlmflow.attention import compile_knockouts
    from vlmflow.knockout import Knockout

    roles = _roles([["bos", "user", "image", "query", "assistant"]])  # no system prompt
    for spec, why in (("system:generated", r"source role\(s\) system"), ("generated:query", "causal")):
        with pytest.warns(VlmflowWarning, match=f"{spec}@all blocks nothing on this input: .*{why}"):
            compile_knockouts(Knockout.parse(spec), 1, 2, roles)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VlmflowWarning)
        compile_knockouts(Knockout.parse("image:generated"), 1, 2, roles)
        compile_knockouts(Knockout("image", "generated", ()), 1, 2, roles)  # an explicit empty layer set is meant


def test_dangling_at_is_an_error():
    from vlmflow.errors import LayerIndexError
    from vlmflow.knockout import Knockout

    with pytest.raises(LayerIndexError, match="ends in '@'"):
        Knockout.parse("image:generated@")


# ---- questions and token budgets ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vlm():
    import vlmflow as vf
    from tests.tiny import build

    return vf.wrap(*build("llava"))


def test_empty_question_and_zero_budget_are_refused(vlm):
    from tests.oracles import random_image

    image = random_image(0)
    with pytest.raises(UsageError, match="question is empty"):
        vlm.generate(image, "  ")
    with pytest.raises(UsageError, match="max_new_tokens .* >= 1, got 0"):
        vlm.generate(image, max_new_tokens=0)
    with pytest.raises(UsageError, match="2 images but 3 questions"):
        vlm.prepare([image, image], ["a", "b", "c"])
    from vlmflow.sweep import SweepEngine, SweepError, sweep_images

    with pytest.raises(UsageError, match="max_new_tokens"):
        SweepEngine(vlm, max_new_tokens=0)
    with pytest.raises(SweepError, match="n_images .* got 0"):
        sweep_images("toy-test", n_images=0)


# ---- notebooks ----------------------------------------------------------------------------------------------
def test_unknown_notebook_parameter_fails_before_execution(monkeypatch):
    from vlmflow import book

    monkeypatch.setattr(book, "run_notebook", lambda *a, **k: pytest.fail("a notebook ran"))
    monkeypatch.setattr(book, "run_figures", lambda *a, **k: pytest.fail("notebooks ran"))
    with pytest.raises(book.RegistryError, match="'n_imagez' \\(did you mean 'n_images'\\?\\)"):
        book.figure("token_roles", params={"n_imagez": 1})
    with pytest.raises(book.RegistryError, match="'n_imagez'.*no selected notebook declares"):
        book.build(only=["token_roles"], overrides={"n_imagez": 1}, html=False)
    declared = book.notebook_parameters(book.repo_root() / "notebooks" / "token_roles.ipynb")
    assert set(book.REQUIRED_PARAMETERS) <= set(declared) and "n_images" in declared


# ---- the exact judge ----------------------------------------------------------------------------------------
def test_exact_judge_flags_or_refuses_words_outside_the_toy_world():
    from vlmflow.judge import JudgeError, get_judge
    from vlmflow.toy.model import SPECIAL_TOKENS, vocabulary

    with pytest.raises(JudgeError, match="reference has other words: 'cat'"):
        get_judge("exact", strict=True).judge("a cat", "a dog")
    lenient = get_judge("exact").judge("The picture shows a red circle", "a red circle")
    assert lenient.f1 == 1.0 and lenient.details["unknown_words"] == {"reference": ["picture", "shows"],
                                                                      "candidate": []}
    # whatever the toy model can say is toy-world text
    words = " ".join(w for w in vocabulary() if w not in SPECIAL_TOKENS)
    assert get_judge("exact", strict=True).judge(words, words).ok


# ---- output folders and user files --------------------------------------------------------------------------
def test_no_leftovers_removes_only_what_the_failed_command_created(tmp_path):
    from vlmflow.cli.common import no_leftovers

    new = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with no_leftovers(new):
            (new / "parts").mkdir(parents=True)
            raise RuntimeError("boom")
    assert not new.exists()
    old = tmp_path / "old"
    old.mkdir()
    with pytest.raises(RuntimeError):
        with no_leftovers(old):
            (old / "x").write_text("x")
            raise RuntimeError("boom")
    assert (old / "x").exists()
    kept = tmp_path / "kept"
    with pytest.raises(RuntimeError):
        with no_leftovers(kept, keep=lambda f: (f / "result").exists()):
            kept.mkdir()
            (kept / "result").write_text("computed")
            raise RuntimeError("boom")
    assert (kept / "result").exists()


def test_result_store_refuses_a_file(tmp_path):
    from vlmflow.store import ResultStore, StoreError

    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        ResultStore(tmp_path / "f", {"a": 1})


def test_user_text_files_fail_with_the_file_named(tmp_path):
    from vlmflow.errors import VlmflowError, read_user_text

    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(VlmflowError, match=r"labels .*latin1.txt is not UTF-8 text \(byte b'\\xe9' at offset 3\)"):
        read_user_text(tmp_path / "latin1.txt", "labels")
    with pytest.raises(VlmflowError, match="no such file"):
        read_user_text(tmp_path / "nope.txt", "labels")


# ---- help ---------------------------------------------------------------------------------------------------
def _parsers(parser: argparse.ArgumentParser, path=("vlmflow",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_command_and_option_is_described_in_full_sentences():
    from vlmflow.cli import build_parser

    parser = build_parser()
    bad = []
    for path, p in _parsers(parser):
        where = " ".join(path)
        if not (p.description and p.description.rstrip().endswith((".", ")"))):
            bad.append(f"{where}: description {p.description!r}")
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not (choice.help and choice.help[0].isupper() and choice.help.endswith(".")):
                        bad.append(f"{where} {choice.dest}: help {choice.help!r}")
                continue
            text = action.help or ""
            if not (text[:1].isupper() and text.endswith(".")):
                bad.append(f"{where} {'/'.join(action.option_strings) or action.dest}: help {text!r}")
    assert not bad, "\n".join(bad)


def test_command_line_names_agree_with_the_library():
    from vlmflow.cli.common import DTYPES
    from vlmflow.cli.sweep import PRESET_NAMES
    from vlmflow.model import _torch_dtype
    from vlmflow.presets import PRESETS

    assert PRESET_NAMES == tuple(PRESETS)
    for name in DTYPES:
        _torch_dtype(name)


def test_architecture_reads_the_config_and_refuses_naming_the_model(tmp_path, monkeypatch):
    """vlmflow.model.architecture: the config's model_type for a model an adapter serves; a model that cannot be read
    or that no adapter serves is refused with its name (pages that compare models check every model first)."""
    import json

    from vlmflow.errors import UnsupportedModelError, WeightsNotAvailableError
    from vlmflow.model import architecture

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for model_type in ("llava", "internvl", "qwen2_vl"):
        folder = tmp_path / model_type
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        assert architecture(str(folder)) == model_type
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UnsupportedModelError, match=r"model '.*bert' is a 'bert' model; the adapters serve .*llava"):
        architecture(str(bert))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsNotAvailableError, match=r"model '.*empty': its config cannot be read"):
        architecture(str(empty))
    with pytest.raises(WeightsNotAvailableError, match=r"unknown toy model 'toy:no-such-model'"):
        architecture("toy:no-such-model")
    with pytest.raises(WeightsNotAvailableError, match=r"model folder /no/such/folder does not exist"):
        architecture("/no/such/folder")

