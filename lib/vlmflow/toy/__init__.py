"""The toy world: synthetic scenes with exact ground truth and a small LLaVA trained on them.

- ``scenes``: seeded scene generator (``make_scene``, ``SceneConfig``, ``ToyObject``) and COCO writer (``write_coco``);
- ``grammar``: canonical description (``describe``), tolerant ``parse``, exact multiset ``score`` (the exact judge
  in ``vlmflow.judge`` builds on these);
- ``questions``: balanced yes/no pairs, counting, colour and position questions with exact answers;
- ``model``: the untrained toy LLaVA + word-level tokenizer + LlavaProcessor, and the one prompt builder;
- ``train`` / ``evaluate``: ``vlmflow toy train`` / ``vlmflow toy eval``; the trained model ships in data/toy_model
  and ``vf.load("toy")`` loads it through the core LLaVA adapter.

Light modules only are imported here (no torch / transformers), so ``import vlmflow.toy`` stays fast.
"""
from vlmflow.toy.grammar import describe, parse, score
from vlmflow.toy.scenes import COLORS, POSITIONS, SHAPES, SIZES, Scene, SceneConfig, ToyObject, make_scene, write_coco

__all__ = ["COLORS", "POSITIONS", "SHAPES", "SIZES", "Scene", "SceneConfig", "ToyObject", "describe", "make_scene",
           "parse", "score", "write_coco"]
