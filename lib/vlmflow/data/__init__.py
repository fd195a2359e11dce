"""vlmflow's data layer: where data lives (`data_root`), getting it with checksums (`fetch`), and readers.

- `fetcher`: `data_root()` / `locate()` / `fetch(name)` / `fetch_all()` / `verify()`; the files and their SHA-256
  and public sources are in `registry.json` (`registry`).
- `coco`: `coco_sample()` -> `CocoSample` (pycocotools COCO, captions, image paths, masks); `CocoSample.from_folder`.
- `pope`: `read_pope`, `pope_questions`, `build_pope` (POPE random / popular / adversarial sampling).
- `mme`: `read_mme`, `mme_questions`.
- `resolver`: `resolve(name, n, seed)` -> `Data` (keys, image loaders, ground truth): the one reader of data names
  (``toy-test``, ``coco-sample``, ``pope``, ``mme``, a folder) for the CLI, the notebooks and the stored runners.

Consumers: `vlmflow.scoring` (yes/no ACC / ACC+), the judges (``chair/``), localization (COCO masks), notebooks.
"""
from vlmflow.data.coco import CocoSample, coco_sample
from vlmflow.data.fetcher import cache_root, data_root, fetch, fetch_all, locate, verify
from vlmflow.data.mme import MME_SUBTASKS, MmeRecord, mme_questions, read_mme
from vlmflow.data.pope import SAMPLINGS, PopeRecord, build_pope, pope_questions, read_pope
from vlmflow.data.registry import UnknownDatasetError, datasets
from vlmflow.data.resolver import DATA_NAMES, Data, DataImage, resolve

__all__ = [
    "CocoSample", "coco_sample", "cache_root", "data_root", "fetch", "fetch_all", "locate", "verify",
    "MME_SUBTASKS", "MmeRecord", "mme_questions", "read_mme", "SAMPLINGS", "PopeRecord", "build_pope",
    "pope_questions", "read_pope", "UnknownDatasetError", "datasets", "DATA_NAMES", "Data", "DataImage", "resolve",
]
