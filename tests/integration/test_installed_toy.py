"""The toy model ships inside the package: a wheel built from this checkout carries it as package data, and from
that wheel alone (no checkout on the path, another working directory) ``vf.load("toy")`` reads the model from the
installed package and answers as the checkout's model does. (``vlmflow toy eval --model toy`` resolves the model
through the same ``load("toy")`` / ``toy_model_path()``; running its evaluation here would add ~10 s.)"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "data" / "toy_model"
TOY_MODELS = ROOT / "data" / "toy_models"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_toy_model_works_from_an_installed_wheel_in_any_directory(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("vlmflow-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        shipped = {Path(n).name: _sha(zf.read(n)) for n in zf.namelist() if n.startswith("vlmflow/toy_model/")}
        zf.extractall(site)
    assert shipped == {p.name: _sha(p.read_bytes()) for p in TOY.iterdir() if p.is_file()}  # the same files
    with zipfile.ZipFile(wheel) as zf:  # and every registered toy model (toy:NAME), file by file
        extra = {n.split("vlmflow/toy_models/", 1)[1]: _sha(zf.read(n)) for n in zf.namelist()
                 if n.startswith("vlmflow/toy_models/")}
    assert extra == {str(p.relative_to(TOY_MODELS)): _sha(p.read_bytes())
                     for p in sorted(TOY_MODELS.glob("*/*")) if p.is_file()}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VLMFLOW_TOY_MODEL", "VLMFLOW_TOY_MODELS", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1")
    script = (
        "import json, vlmflow as vf\n"
        "from vlmflow.model import toy_model_path\n"
        "from vlmflow.toy.scenes import make_scene\n"
        "vlm = vf.load('toy')\n"
        "gen = vlm.generate(make_scene(0, 'test', 0).image, 'describe the image', max_new_tokens=12)\n"
        "from vlmflow.model import toy_models\n"
        "print(json.dumps({'module': vf.__file__, 'model': str(toy_model_path()), 'text': gen.text,\n"
        "                  'registry': {k: str(v) for k, v in toy_models().items()}}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    where = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(where["module"]).is_relative_to(site) and Path(where["model"]).is_relative_to(site)
    names = ["toy"] + [f"toy:{p.name}" for p in sorted(TOY_MODELS.glob("*")) if (p / "config.json").is_file()]
    assert list(where["registry"]) == names and all(Path(p).is_relative_to(site) for p in where["registry"].values())
    import vlmflow as vf
    from vlmflow.toy.scenes import make_scene

    here = vf.load("toy").generate(make_scene(0, "test", 0).image, "describe the image", max_new_tokens=12)
    assert where["text"] == here.text and here.text  # the installed copy is the checkout's model
