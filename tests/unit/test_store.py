"""The result store (vlmflow.store): settings never mix, parts are atomic and keyed, shards merge to the unsharded
table, and a rerun computes only what is missing."""
import json

import numpy as np
import pandas as pd
import pytest

import vlmflow as vf
from tests.tiny import build
from vlmflow import store as st
from vlmflow.presets import preset
from vlmflow.sweep import SweepImage, run_sweep

SETTINGS = {"model": "tiny-llava", "question": "describe the image", "max_new_tokens": 6, "seed": 0}


def _images(n=4):
    def load(i):
        rng = np.random.default_rng(i)
        return (rng.random((32, 40, 3)) * 255).astype("uint8")

    return [SweepImage(f"img-{i}", lambda i=i: load(i)) for i in range(n)]


@pytest.fixture(scope="module")
def vlm():
    return vf.wrap(*build("llava"))


def _sweep(vlm, folder, shard=(0, 1), configs=None):
    store = st.ResultStore(folder, SETTINGS, {"note": "test"})
    configs = configs or preset("from-layer", vlm.num_layers)
    return run_sweep(vlm, _images(), configs, store, max_new_tokens=6, shard=shard, progress=False)


def test_other_settings_are_refused_naming_the_key(tmp_path):
    st.ResultStore(tmp_path, SETTINGS)
    st.ResultStore(tmp_path, dict(SETTINGS))  # same settings: fine
    with pytest.raises(st.SettingsMismatchError, match="max_new_tokens: 6 != 7"):
        st.ResultStore(tmp_path, {**SETTINGS, "max_new_tokens": 7})


def test_parts_are_keyed_atomic_and_loadable(tmp_path):
    store = st.ResultStore(tmp_path, SETTINGS)
    rows = [{"image": "a", "spec_id": s, "text": s * 2} for s in ("x", "y")]
    store.write_part("a", rows, [{"image": "a", "spec_id": "x", "position": 0, "layer": 0,
                                  "image_map": np.ones(3, np.float16)}])
    assert store.done() == {("a", "x"), ("a", "y")}
    assert not list((tmp_path / "parts").glob(".tmp-*"))
    (tmp_path / "parts" / ".tmp-999-a.junk.parquet").write_bytes(b"torn")  # a killed writer's leftover
    st.ResultStore(tmp_path, SETTINGS)
    assert not list((tmp_path / "parts").glob(".tmp-*"))
    df = st.load_results(tmp_path)
    assert df.spec_id.tolist() == ["x", "y"] and df.attrs["manifest"]["settings_hash"] == st.settings_hash(SETTINGS)
    att = st.load_results(tmp_path, "attention")
    assert att.image_map[0].dtype == np.float16 and len(att) == 1
    with pytest.raises(st.StoreError, match="duplicate"):
        store.write_part("b", [{"image": "b", "spec_id": "x"}] * 2)


def test_rerun_computes_only_missing_keys(vlm, tmp_path):
    configs = preset("from-layer", vlm.num_layers)
    assert _sweep(vlm, tmp_path, configs=configs[:5]) == 5 * 4
    assert _sweep(vlm, tmp_path, configs=configs) == (len(configs) - 5) * 4  # the preset grew
    assert _sweep(vlm, tmp_path, configs=configs) == 0
    df = st.load_results(tmp_path)
    assert len(df) == len(configs) * 4 and not df.duplicated(["image", "spec_id"]).any()


def test_shards_merged_equal_the_unsharded_run(vlm, tmp_path):
    _sweep(vlm, tmp_path / "all")
    for i in range(2):
        _sweep(vlm, tmp_path / f"s{i}", shard=(i, 2))
    assert set(st.load_results(tmp_path / "s0").image) == {"img-0", "img-2"}
    n = st.merge([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    a, m = st.load_results(tmp_path / "all"), st.load_results(tmp_path / "merged")
    assert n == len(a)
    pd.testing.assert_frame_equal(a, m)
    pd.testing.assert_frame_equal(st.load_results(tmp_path / "all", "attention"),
                                  st.load_results(tmp_path / "merged", "attention"))
    st.ResultStore(tmp_path / "other", {**SETTINGS, "seed": 1})
    with pytest.raises(st.SettingsMismatchError, match="different settings"):
        st.merge([tmp_path / "s0", tmp_path / "other"], tmp_path / "bad")


def test_shard_spec_parsing():
    assert st.shard_of("1/4") == (1, 4) and st.shard_of(None) == (0, 1)
    for bad in ("4/4", "x", "-1/2"):
        with pytest.raises(st.StoreError, match="bad shard"):
            st.shard_of(bad)


def test_manifest_records_provenance(tmp_path, vlm):
    fp = st.weights_fingerprint(vlm.model)
    assert fp == st.weights_fingerprint(vf.wrap(*build("llava")).model)  # same seed, same weights
    assert fp != st.weights_fingerprint(vf.wrap(*build("llava", seed=1)).model)
    st.ResultStore(tmp_path, {**SETTINGS, "weights": fp, **st.library_versions()}, {"preset": "from-layer"})
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["settings"]["weights"] == fp and "torch" in man["settings"] and man["provenance"]["preset"]


def test_one_weights_fingerprint_for_a_model_loaded_or_named(tmp_path):
    """The same weights give the same fingerprint whether the model is loaded or only named (so a notebook asking for
    stored results before loading finds what the CLI stored); other weights or another config give another one."""
    model, processor = build("llava")
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    loaded = vf.load(str(folder))
    named = st.weights_fingerprint(str(folder))
    assert named.startswith("sha256:")
    assert st.weights_fingerprint(loaded) == st.weights_fingerprint(loaded.model) == named
    other, _ = build("llava", seed=1)
    other.save_pretrained(tmp_path / "o")
    assert st.weights_fingerprint(str(tmp_path / "o")) != named
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "image_seq_length": 999}))
    assert st.weights_fingerprint(str(folder)) != named
    assert st.weights_fingerprint("some-org/not-in-the-cache") == "hub:some-org/not-in-the-cache"


def test_cached_table_reads_back_only_under_the_same_provenance(tmp_path, capsys):
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"x": [len(calls)]})

    key = st.provenance("some/model-id", "toy-test:seed=0", n_images=2, seed=0, device="cpu", dtype="None")
    assert {"weights", "data", "n_images", "vlmflow", "torch", "transformers"} <= set(key)
    file = tmp_path / "t.parquet"
    first = st.cached_table(file, key, compute)
    again = st.cached_table(file, dict(key), compute)
    assert calls == [1] and again.equals(first) and "reusing" in capsys.readouterr().out
    other = st.cached_table(file, {**key, "device": "cuda"}, compute)  # another parameter: recomputed
    assert calls == [1, 1] and other.x.tolist() == [2]
    (tmp_path / "t.provenance.json").unlink()  # killed between the table and its sidecar: never read back
    assert st.cached_table(file, key, compute).x.tolist() == [3]
