"""The shipped toy model (data/toy_model): loads offline with plain transformers Auto classes, describes 50 fresh
test scenes with object F1 >= 0.9, answers their yes/no, count and colour questions at >= 0.9, and the full image
knockout (image hidden from every text and generated token in every layer) drops the description below 0.3 and
each answer accuracy to chance (within two binomial standard errors)."""
import os
from pathlib import Path

import pytest

# the shipped folder, or $VLMFLOW_TOY_MODEL (as vf.load("toy") does) to check a checkpoint during development
MODEL_DIR = Path(os.environ.get("VLMFLOW_TOY_MODEL") or Path(__file__).resolve().parents[2] / "data" / "toy_model")
FRESH_SEED = 12345  # not the model card's evaluation seed (0), not the training seed

pytestmark = pytest.mark.skipif(not (MODEL_DIR / "config.json").exists(),
                                reason=f"{MODEL_DIR} does not exist yet (train it: vlmflow toy train --out {MODEL_DIR})")


@pytest.fixture(scope="module")
def toy():
    import vlmflow as vf

    return vf.load(str(MODEL_DIR), dtype="float32")


def test_loads_offline_as_llava(toy):
    model = toy.model
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert model.config.text_config.num_hidden_layers >= 8
    grid = model.config.vision_config.image_size // model.config.vision_config.patch_size
    assert grid >= 8
    assert sum(p.stat().st_size for p in MODEL_DIR.iterdir()) <= 15 * 2 ** 20


@pytest.fixture(scope="module")
def fresh_scores(toy):
    from vlmflow.toy.evaluate import evaluate

    plain = evaluate(toy, n=50, seed=FRESH_SEED, split="test", kinds=("describe",))
    ko = evaluate(toy, n=50, seed=FRESH_SEED, split="test", kinds=("describe",), knockout=True)
    return plain, ko


# The description target (F1 >= 0.9 on held-out scenes), on 50 scenes of a seed the model card does not use.
def test_describes_fresh_scenes_with_f1_at_least_09(fresh_scores):
    plain, _ = fresh_scores
    assert plain["describe_f1"] >= 0.9, plain


def test_full_knockout_leaves_description_f1_below_03(fresh_scores):
    _, ko = fresh_scores
    assert ko["describe_f1"] < 0.3, ko


def test_answers_fresh_questions_at_target_and_at_chance_without_the_image(toy):
    """The question targets on fresh scenes; the knockout bound is the model card's (evaluate.target_status)."""
    from vlmflow.toy.evaluate import CHANCE, evaluate, target_status

    kinds = ("exists", "count", "color")
    plain = evaluate(toy, n=50, seed=FRESH_SEED, split="test", kinds=kinds)
    ko = evaluate(toy, n=50, seed=FRESH_SEED, split="test", kinds=kinds, knockout=True)
    rows = target_status({"metrics": {"plain": plain, "full_knockout": ko}, "chance": CHANCE})
    assert {r["metric"] for r in rows} == {"exists_acc", "count_acc", "color_acc"}
    assert all(r["met"] for r in rows), rows
