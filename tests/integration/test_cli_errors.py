"""The catalogue of bad command lines: each user mistake ends in ONE stderr line `vlmflow: error: ...` that names the
thing at fault (and what would be valid), exit code 2, no traceback, and no file or folder left behind.

Every case runs `vlmflow` in a subprocess, as a user would. Add a case whenever a new mistake is found. Cases that
fail on argument checks never import torch (a fraction of a second each; ``test_argument_mistakes_never_import_torch``
holds the CLI to it); only the knockout case loads the toy model.
Progress-bar lines (tqdm's "...%|...|") are not counted as output lines.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VLMFLOW = [sys.executable, "-c", "import sys; from vlmflow.cli import main; sys.exit(main())"]


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("VLMFLOW_DEBUG", None)
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def _run(args, cwd, env=None, timeout=120):
    return subprocess.run([*VLMFLOW, *args], cwd=cwd, env=env or _env(), capture_output=True, text=True,
                          timeout=timeout)


def _lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and "%|" not in ln]


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inputs shared by the cases: a valid toy scene, bad images, bad text files."""
    from PIL import Image

    d = tmp_path_factory.mktemp("inputs")
    from vlmflow.toy.scenes import make_scene

    make_scene(0, "test", 0).image.save(d / "scene.png")
    Image.new("RGB", (1, 1)).save(d / "one_pixel.png")
    Image.new("1", (8000, 8000)).save(d / "huge.png")  # 64 MP, a few kB on disk
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (d / "latin1.jsonl").write_bytes('{"reference": "caf\xe9", "candidate": "x"}\n'.encode("latin-1"))
    (d / "empty.jsonl").write_text("\n\n")
    (d / "not_json.jsonl").write_text('{"reference": "a", "candidate": "b"}\n{oops}\n')
    (d / "a_file").write_text("not a folder")
    (d / "pairs.jsonl").write_text('{"reference": "a man rides a bike", "candidate": "a person"}\n'
                                   '{"reference": "a dog", "candidate": "a cat"}\n')
    return d


# (case id, argv with {d} for the inputs folder, words the error line must contain)
CASES = [
    ("max-new-tokens-0", ["describe", "--image", "{d}/scene.png", "--max-new-tokens", "0"],
     ["--max-new-tokens", ">= 1", "got 0"]),
    ("book-build-jobs-0", ["book", "build", "--jobs", "0"], ["--jobs", ">= 1", "got 0"]),
    ("empty-prompt", ["describe", "--image", "{d}/scene.png", "--prompt", " "], ["--prompt", "empty"]),
    ("knockout-dangling-at", ["describe", "--image", "{d}/scene.png", "--knockout", "image:generated@"],
     ["image:generated@", "@all"]),
    ("knockout-unknown-role", ["describe", "--image", "{d}/scene.png", "--knockout", "imgae:generated"],
     ["'imgae'", "roles:", "image"]),
    ("knockout-reversed-layers", ["describe", "--image", "{d}/scene.png", "--knockout", "image:generated@5-2"],
     ["5-2", "backwards"]),
    ("image-missing", ["describe", "--image", "{d}/nowhere.png"], ["nowhere.png", "not found"]),
    ("image-corrupt", ["describe", "--image", "{d}/corrupt.png"], ["corrupt.png", "cannot read"]),
    ("image-folder", ["describe", "--image", "{d}"], ["is a folder"]),
    ("image-1x1", ["describe", "--image", "{d}/one_pixel.png"], ["one_pixel.png", "1x1", "at least 14 px"]),
    ("image-8000x8000", ["describe", "--image", "{d}/huge.png"], ["huge.png", "8000x8000", "limit is 50 MP"]),
    ("model-typo-offline", ["describe", "--image", "{d}/scene.png", "--model", "toyy"],
     ["'toyy'", "`hf download toyy`", "'toy'"]),
    ("model-folder-missing", ["describe", "--image", "{d}/scene.png", "--model", "./no_model_here"],
     ["no_model_here", "does not exist"]),
    ("device-unknown", ["describe", "--image", "{d}/scene.png", "--device", "tpu9"], ["'tpu9'", "cpu"]),
    ("dtype-unknown", ["describe", "--image", "{d}/scene.png", "--dtype", "float8"], ["--dtype", "'float8'",
                                                                                     "bfloat16"]),
    ("sweep-out-is-file", ["sweep", "--out", "{d}/a_file", "--n-images", "1"], ["--out", "a_file", "is a file"]),
    ("sweep-n-images-0", ["sweep", "--out", "{d}/new_sweep", "--n-images", "0"], ["--n-images", ">= 1"]),
    ("sweep-max-new-tokens-0", ["sweep", "--out", "{d}/new_sweep", "--max-new-tokens", "0"],
     ["--max-new-tokens", ">= 1"]),
    ("sweep-batch-size-0", ["sweep", "--out", "{d}/new_sweep", "--batch-size", "0"], ["--batch-size", ">= 1"]),
    ("sweep-unknown-preset", ["sweep", "--out", "{d}/new_sweep", "--preset", "from_layer"],
     ["--preset", "'from_layer'", "from-layer"]),
    ("sweep-bad-shard", ["sweep", "--out", "{d}/new_sweep", "--shard", "4/4"], ["shard", "'4/4'", "0 <= i < n"]),
    ("sweep-data-missing", ["sweep", "--out", "{d}/new_sweep", "--data", "{d}/no_data"], ["no_data", "toy-test"]),
    ("sweep-data-old-spelling", ["sweep", "--out", "{d}/new_sweep", "--data", "coco_sample"],
     ["'coco_sample'", "use 'coco-sample'", "toy-test, toy-val, toy-train, coco-sample, pope, mme"]),
    ("sweep-data-questions-only", ["sweep", "--out", "{d}/new_sweep", "--data", "mme"], ["'mme'", "no images"]),
    ("sweep-merge-missing", ["sweep", "--merge", "{d}/no_shard", "--out", "{d}/merged"], ["no_shard", "no such"]),
    ("sweep-empty-question", ["sweep", "--out", "{d}/new_sweep", "--question", ""], ["--question", "empty"]),
    ("toy-scenes-n-negative", ["toy", "scenes", "--n", "-1", "--out", "{d}/new_scenes"], ["--n", ">= 1", "-1"]),
    ("toy-scenes-n-0", ["toy", "scenes", "--n", "0", "--out", "{d}/new_scenes"], ["--n", ">= 1"]),
    ("toy-scenes-negative-seed", ["toy", "scenes", "--n", "1", "--seed", "-1", "--out", "{d}/new_scenes"],
     ["--seed", ">= 0"]),
    ("toy-train-out-is-file", ["toy", "train", "--out", "{d}/a_file", "--minutes", "1"], ["--out", "is a file"]),
    ("toy-train-clips-not-qwen", ["toy", "train", "--out", "{d}/new_model", "--clips", "0.5", "--arch", "internvl"],
     ["--clips 0.5", "--arch qwen2-vl", "internvl"]),
    ("toy-train-arch-unknown", ["toy", "train", "--out", "{d}/new_model", "--arch", "qwen"],
     ["--arch", "'qwen'", "qwen2-vl"]),
    ("toy-eval-model-missing", ["toy", "eval", "--model", "{d}/no_model", "--n", "1"], ["no_model", "toy train"]),
    ("toy-train-recipe-unknown", ["toy", "train", "--out", "{d}/new_model", "--recipe", "wide", "--cpu-minutes", "1"],
     ["--recipe", "'wide'", "baseline"]),
    ("toy-train-recipe-no-budget", ["toy", "train", "--out", "{d}/new_model", "--recipe", "baseline"],
     ["--recipe", "--cpu-minutes"]),
    ("toy-train-cpu-minutes-0", ["toy", "train", "--out", "{d}/new_model", "--cpu-minutes", "0"], ["--cpu-minutes"]),
    ("toy-study-not-a-model", ["toy", "study", "--models", "{d}/no_model", "--out", "{d}/new_study.json"],
     ["no_model", "training.json"]),
    ("toy-eval-model-unknown-name", ["toy", "eval", "--model", "toy:windw", "--n", "1"],
     ["'toy:windw'", "valid toy models: toy"]),
    ("describe-toy-model-typo", ["describe", "--image", "{d}/scene.png", "--model", "toy:compres"],
     ["'toy:compres'", "toy:compress"]),
    ("toy-train-unknown-plant", ["toy", "train", "--out", "{d}/new_model", "--plant", "windows"],
     ["--plant", "'windows'", "window"]),
    ("toy-scenes-out-is-file", ["toy", "scenes", "--n", "1", "--out", "{d}/a_file"], ["a_file", "is a file"]),
    ("toy-scenes-clutter", ["toy", "scenes", "--n", "1", "--out", "{d}/new_scenes", "--clutter", "5"],
     ["--clutter", "between 0 and 1"]),
    ("toy-scenes-objects", ["toy", "scenes", "--n", "1", "--out", "{d}/new_scenes", "--min-objects", "5",
                            "--max-objects", "2"], ["min_objects", "max_objects"]),
    ("toy-clips-one-frame", ["toy", "clips", "--n", "1", "--out", "{d}/new_clips", "--min-frames", "1"],
     ["min_frames", "2 <="]),
    ("toy-clips-no-objects", ["toy", "clips", "--n", "1", "--out", "{d}/new_clips", "--min-objects", "0"],
     ["min_objects >= 1"]),
    ("judge-exact-free-text", ["judge", "--judge", "exact", "--reference", "a cat", "--candidate", "a dog"],
     ["exact judge", "'cat'"]),
    ("judge-pairs-not-utf8", ["judge", "--pairs", "{d}/latin1.jsonl"], ["latin1.jsonl", "not UTF-8"]),
    ("judge-pairs-empty", ["judge", "--pairs", "{d}/empty.jsonl"], ["empty.jsonl", "no pairs"]),
    ("judge-pairs-bad-json", ["judge", "--pairs", "{d}/not_json.jsonl"], ["not_json.jsonl", "line 2"]),
    ("judge-pairs-missing", ["judge", "--pairs", "{d}/nowhere.jsonl"], ["nowhere.jsonl", "no such file"]),
    ("judge-pairs-exact-line", ["judge", "--judge", "exact", "--pairs", "{d}/pairs.jsonl"],
     ["pairs.jsonl line 1", "'man'"]),
    ("judge-half-pair", ["judge", "--reference", "a cat"], ["--candidate"]),
    ("judge-out-is-folder", ["judge", "--pairs", "{d}/pairs.jsonl", "--out", "{d}"], ["--out", "is a folder"]),
    ("judge-validate-missing", ["judge", "--validate", "{d}/no_labels.jsonl"], ["no_labels.jsonl", "no such file"]),
    ("judge-concurrency-0", ["judge", "--judge", "llm", "--pairs", "{d}/pairs.jsonl", "--concurrency", "0"],
     ["--concurrency", ">= 1"]),
    ("judge-tolerance", ["judge", "--validate", "x", "--tolerance", "2"], ["--tolerance", "between 0 and 1"]),
    ("judge-validate-no-labels", ["judge", "validate"], ["validate", "--labels"]),
    ("judge-validate-labels-missing", ["judge", "validate", "--labels", "{d}/no_labels.jsonl"],
     ["no_labels.jsonl", "no such file"]),
    ("judge-validate-bad-judge", ["judge", "validate", "--labels", "{d}/pairs.jsonl", "--judges", "lexical,gpt"],
     ["--judges", "'gpt'"]),
    ("judge-labels-without-validate", ["judge", "--labels", "{d}/pairs.jsonl", "--pairs", "{d}/pairs.jsonl"],
     ["--labels", "validate"]),
    ("figure-unknown-param", ["figure", "token_roles", "--param", "n_imagez=1"],
     ["token_roles", "'n_imagez'", "did you mean 'n_images'"]),
    ("figure-unknown-name", ["figure", "fig99"], ["'fig99'", "token_roles"]),
    ("figure-param-syntax", ["figure", "token_roles", "--param", "n_images"], ["n_images", "NAME=VALUE"]),
    ("figure-device-cuda-or-tpu", ["figure", "token_roles", "--device", "tpu9"], ["'tpu9'", "cpu"]),
    ("figure-out-is-file", ["figure", "token_roles", "--out", "{d}/a_file"], ["--out", "is a file"]),
    ("figure-timeout-0", ["figure", "token_roles", "--timeout", "0"], ["--timeout", "> 0"]),
    ("book-unknown-figure", ["book", "build", "--only", "fig99", "--no-html"], ["'fig99'", "token_roles"]),
    ("book-check-links-missing", ["book", "check-links", "{d}/no_html"], ["no_html", "book build"]),
    ("reprompt-k-150", ["reprompt", "--image", "{d}/scene.png", "--question", "is there a ring ?", "--k", "150"],
     ["--k", "[0, 100]", "150"]),
    ("reprompt-empty-question", ["reprompt", "--image", "{d}/scene.png", "--question", ""], ["--question", "empty"]),
    ("localize-n-images-0", ["localize", "--out", "{d}/new_loc", "--n-images", "0"], ["--n-images", ">= 1"]),
    ("localize-data-missing", ["localize", "--out", "{d}/new_loc", "--data", "{d}/no_data", "--n-images", "1"],
     ["no_data", "instances"]),
    ("localize-data-old-spelling", ["localize", "--out", "{d}/new_loc", "--data", "toy"],
     ["'toy'", "use 'toy-test'", "coco-sample"]),
    ("localize-heads", ["localize", "--out", "{d}/new_loc", "--heads", "first"], ["--heads", "'first'", "mean"]),
    ("data-verify-root-missing", ["data", "verify", "--root", "{d}/no_data"], ["--root", "no_data", "no such"]),
    ("data-unknown-dataset", ["data", "verify", "cocoo"], ["'cocoo'", "chair, coco-sample, mme, pope"]),
    ("data-folder-spelling", ["data", "fetch", "coco_sample"], ["'coco_sample'", "use 'coco-sample'", "coco-sample"]),
    ("unknown-command", ["descibe"], ["'descibe'", "describe"]),
]


@pytest.mark.parametrize("case, argv, words", CASES, ids=[c[0] for c in CASES])
def test_user_mistake_is_one_line_exit_2_no_leftovers(files, tmp_path, case, argv, words):
    before = _tree(files)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = _run([a.format(d=files) for a in argv], cwd)
    lines = _lines(proc.stderr)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("vlmflow: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert proc.stdout == ""
    assert _tree(files) == before, "the command left files next to its inputs"
    assert _tree(cwd) == set(), "the command left files in its working folder"


@pytest.mark.parametrize("argv", [["describe", "--image", "nowhere.png"], ["toy", "train", "--arch", "vit"],
                                  ["figure", "no_such_figure"], ["sweep", "--preset", "no_such_preset"]])
def test_argument_mistakes_never_import_torch(tmp_path, argv):
    """A mistake caught before any model is needed is answered without importing torch (a second or more of every
    such command before, when `vlmflow.cli.toy` pulled torch in through the recipes, training and video modules)."""
    code = ("import sys\nfrom vlmflow.cli import main\ntry:\n    rc = main(sys.argv[1:])\n"
            "except SystemExit as exit:\n    rc = exit.code\n"
            "print(rc, sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True)
    assert proc.stdout.strip() == "2 []", (proc.stdout, proc.stderr)


def test_cuda_on_a_machine_without_it(files, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = _run(["describe", "--image", str(files / "scene.png"), "--device", "cuda"], tmp_path)
    lines = _lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "'cuda'" in lines[0] and "no CUDA device" in lines[0] and "use cpu" in lines[0]


def test_mistyped_model_online_without_route_fails_without_retries(files, tmp_path):
    """Not offline, but the hub cannot be reached (a closed local port): one connection attempt, not transformers'
    retries with backoff (~29 s before). The error names the command this environment ships."""
    no_proxy = {v: None for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")}
    env = _env(HF_HUB_OFFLINE=None, HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), **no_proxy)
    proc = _run(["describe", "--image", str(files / "scene.png"), "--model", "someone/llava-typo"], tmp_path, env)
    lines = _lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "127.0.0.1 cannot be reached" in lines[0] and "`hf download someone/llava-typo`" in lines[0]
    assert (Path(sys.executable).parent / "hf").is_file()
    assert "Retrying" not in proc.stderr


def test_knockout_that_empties_a_row_is_refused(files, tmp_path):
    """all:all leaves the first token with no key at all (it may only attend to itself): refused with the reason."""
    proc = _run(["describe", "--image", str(files / "scene.png"), "--knockout", "all:all", "--max-new-tokens", "2"],
                tmp_path)
    lines = _lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "all:all@all" in lines[0] and "no key to attend to" in lines[0] and "image:all" in lines[0]
    assert proc.stdout == ""


def test_failed_judgments_make_the_exit_code_nonzero_unless_allowed(files, tmp_path):
    """An LLM batch whose every pair failed (an endpoint that refuses connections) exits 1 with one error line;
    --allow-failures turns it into a warning and exit 0. The output rows carry the reasons either way."""
    base = ["judge", "--judge", "llm", "--pairs", str(files / "pairs.jsonl"), "--base-url", "http://127.0.0.1:9/v1",
            "--max-attempts", "1", "--timeout", "2", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    env = _env(OPENAI_API_KEY="sk-test-not-a-key")
    strict = _run([*base, "--out", str(tmp_path / "a.jsonl")], tmp_path, env)
    assert strict.returncode == 1, strict.stderr
    assert "Traceback" not in strict.stderr
    errors = [ln for ln in _lines(strict.stderr) if ln.startswith("vlmflow: error: ")]
    assert len(errors) == 1 and "2 of 2 judgments failed" in errors[0] and "--allow-failures" in errors[0]
    rows = [json.loads(ln) for ln in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["failed"] for r in rows)
    allowed = _run([*base, "--out", str(tmp_path / "b.jsonl"), "--allow-failures"], tmp_path, env)
    assert allowed.returncode == 0, allowed.stderr
    assert any(ln.startswith("vlmflow: warning: 2 of 2 judgments failed") for ln in _lines(allowed.stderr))


def test_version_and_internal_errors(tmp_path):
    """--version answers; a bug (not a user mistake) keeps its traceback and exit code 1."""
    from vlmflow import __version__

    proc = _run(["--version"], tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"vlmflow {__version__}"
    code = ("import sys; import vlmflow.cli.data as d; d._where = lambda args: 1 / 0; "
            "from vlmflow.cli import main; sys.exit(main(['data', 'where']))")
    bug = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "ZeroDivisionError" in bug.stderr


def test_json_outputs_are_json_and_agree_with_the_library(tmp_path):
    """--json prints one JSON object that says what the library says (cheap, torch-free commands)."""
    from vlmflow import book
    from vlmflow.data.fetcher import locate

    scenes = _run(["toy", "scenes", "--n", "3", "--out", str(tmp_path / "s"), "--json"], tmp_path)
    got = json.loads(scenes.stdout)
    assert scenes.returncode == 0 and got["n"] == 3
    assert len(json.loads(Path(got["instances"]).read_text())["images"]) == 3
    assert sorted(p.name for p in Path(got["images"]).iterdir()) == [f"test_{i:06d}.png" for i in range(3)]
    clips = json.loads(_run(["toy", "clips", "--n", "2", "--out", str(tmp_path / "c"), "--json"], tmp_path).stdout)
    assert len(json.loads(Path(clips["instances"]).read_text())["videos"]) == 2
    assert {p.name.split("_f")[0] for p in Path(clips["frames"]).iterdir()} == {"test_000000", "test_000001"}
    where = json.loads(_run(["data", "where", "--json"], tmp_path).stdout)
    root, how = locate()
    assert (where["root"], where["found_from"]) == (str(root), how)
    listed = json.loads(_run(["figure", "--list", "--json"], tmp_path).stdout)
    assert list(listed) == list(book.load_registry(ROOT))
