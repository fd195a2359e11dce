"""`vlmflow.data.resolve`: one spelling per data name, the same keys and pixels as the readers it replaces, every
kind of data (toy splits, the COCO sample, POPE / MME questions, a COCO folder, its instances.json, an image folder),
and a misspelt name answered with the valid list."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vlmflow.data import DATA_NAMES, UnknownDatasetError, resolve
from vlmflow.errors import DataNotAvailableError, UsageError
from vlmflow.toy.scenes import make_scene, scene_settings_id, write_coco


@pytest.mark.parametrize("name,split", [("toy-test", "test"), ("toy-val", "val"), ("toy-train", "train")])
def test_toy_splits_are_the_seeded_scenes_of_that_split(name, split):
    data = resolve(name, 3, seed=2)
    assert data.keys == [f"{name}-{i:05d}" for i in range(3)]
    assert data.data_id == f"{name}:seed=2:scenes={scene_settings_id()}"
    for i, im in enumerate(data.images):
        assert np.array_equal(np.asarray(im.load()), np.asarray(make_scene(2, split, i).image))
    assert data.truth(1).toy_objects == make_scene(2, split, 1).toy_objects
    assert len(resolve(name).images) == 100  # all: the default scene count


def test_sweep_images_and_load_sample_are_callers_of_the_resolver(tmp_path):
    from vlmflow.localize import load_sample
    from vlmflow.sweep import sweep_images

    data_id, images = sweep_images("toy-test", 2, 1)
    data = resolve("toy-test", 2, 1)
    assert data_id == data.data_id and [im.key for im in images] == data.keys
    sample = load_sample("toy-test", 2, 1, tmp_path)
    assert sample.root == tmp_path / f"toy-test-seed1-n2-{scene_settings_id()}"
    assert np.array_equal(np.asarray(sample.image(sample.image_ids[1])), np.asarray(make_scene(1, "test", 1).image))


def test_coco_folder_and_its_instances_file_resolve_to_the_same_images(tmp_path):
    from vlmflow.localize import load_sample

    write_coco(tmp_path / "scenes", seed=0, n=3, split="val", progress=False)
    folder, instances = resolve(str(tmp_path / "scenes"), 2), resolve(str(tmp_path / "scenes" / "instances.json"), 2)
    assert folder.keys == instances.keys and len(folder.keys) == 2
    # the path (a folder may hold other instance files: the file names it), then the content's fingerprint
    assert folder.data_id.startswith(f"coco:{tmp_path / 'scenes'}@sha256:")
    assert instances.data_id.startswith(f"coco:{tmp_path / 'scenes' / 'instances.json'}@sha256:")
    assert folder.data_id.split("@")[1] == instances.data_id.split("@")[1]
    assert np.array_equal(np.asarray(folder.images[0].load()), np.asarray(instances.images[0].load()))
    via_file = load_sample(str(tmp_path / "scenes" / "instances.json"))  # the localize path's instances.json branch
    assert via_file.image_ids == folder.truth.image_ids


def test_a_folder_of_images_is_keyed_by_file_name(tmp_path):
    for name, color in [("b.png", (0, 0, 255)), ("a.jpg", (255, 0, 0))]:
        Image.new("RGB", (32, 32), color).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    data = resolve(str(tmp_path))
    assert data.keys == ["a.jpg", "b.png"] and data.truth is None
    assert np.asarray(data.images[1].load())[0, 0].tolist() == [0, 0, 255]
    assert data.data_id.startswith(f"images:{tmp_path}@sha256:")
    (tmp_path / "a.jpg").write_bytes((tmp_path / "b.png").read_bytes())  # a replaced file: another id
    assert resolve(str(tmp_path)).data_id != data.data_id


def test_coco_sample_keys_are_its_first_image_ids():
    try:
        data = resolve("coco-sample", 3)
    except DataNotAvailableError as exc:
        pytest.skip(f"COCO sample not available: {exc}")
    assert data.keys == [f"{i:012d}" for i in data.truth.image_ids[:3]]
    assert data.coco() is data.truth


def test_pope_and_mme_are_questions_without_images():
    from vlmflow.data import mme_questions, pope_questions
    from vlmflow.sweep import sweep_images

    try:
        pope, mme = resolve("pope", 5, sampling="adversarial"), resolve("mme", 4)
    except DataNotAvailableError as exc:
        pytest.skip(f"POPE / MME files not available: {exc}")
    assert pope.truth == pope_questions("adversarial", progress=False)[:5] and pope.images == []
    assert mme.truth == mme_questions(progress=False)[:4] and pope.data_id == "pope:adversarial"
    with pytest.raises(DataNotAvailableError, match="'pope'.*no images"):
        sweep_images("pope", 2)


@pytest.mark.parametrize("name,hint", [("coco_sample", "coco-sample"), ("toy", "toy-test"), ("coco", "coco-sample"),
                                       ("toy_test", "toy-test"), ("cocoa", None)])
def test_a_misspelt_name_is_answered_with_the_valid_list(name, hint):
    with pytest.raises(UnknownDatasetError) as err:
        resolve(name)
    message = str(err.value)
    assert f"{name!r}" in message and all(n in message for n in DATA_NAMES)
    if hint:
        assert f"(use {hint!r})" in message


def test_a_missing_path_and_a_bad_count_are_named(tmp_path):
    with pytest.raises(DataNotAvailableError, match="no_such_folder.*toy-test"):
        resolve(str(tmp_path / "no_such_folder"))
    with pytest.raises(DataNotAvailableError, match="no instances.json and no image files"):
        resolve(str(tmp_path))
    with pytest.raises(UsageError, match="n_images"):
        resolve("toy-test", 0)
