"""The declared versions agree with what the installed (pinned) transformers itself requires, read from its metadata
(not a copy typed here): pyproject.toml's torch bound equals transformers' own; every torch pin (CPU constraints,
requirements, GPU requirements, environment.yml) satisfies it; every transformers pin equals the installed one and
lies in pyproject's range. And ``import vlmflow`` names a version problem in one line (a fake torch 2.5.1 / a fake
transformers 6.0.0 installed in front of the real ones)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from vlmflow import versions

ROOT = Path(__file__).resolve().parents[2]
PIN_FILES = ["requirements.txt", "constraints.txt", "requirements-gpu.txt"]


def _pyproject_requirement(name: str) -> Requirement:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(r for r in map(Requirement, deps) if r.name == name)


def _pins(name: str) -> dict[str, Requirement]:
    """{file: requirement} for every line naming ``name`` in the pip files and environment.yml's pip section."""
    found = {}
    for file in PIN_FILES:
        for line in (ROOT / file).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-") and Requirement(line).name.lower() == name:
                found[file] = Requirement(line)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    for line in pip:
        if not line.startswith("-") and Requirement(line).name.lower() == name:
            found["environment.yml"] = Requirement(line)
    return found


def _pinned_version(req: Requirement) -> Version:
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req} is not an exact pin"
    return Version(spec.version)


def test_pyproject_torch_bound_is_transformers_own():
    theirs = versions.transformers_torch_requirement()
    assert theirs, "the installed transformers declares no torch requirement"
    assert _pyproject_requirement("torch").specifier == SpecifierSet(theirs)


def test_every_torch_pin_satisfies_transformers():
    need = SpecifierSet(versions.transformers_torch_requirement())
    pins = _pins("torch")
    assert set(pins) == {"requirements.txt", "constraints.txt", "environment.yml"}, pins  # gpu: via -r requirements
    for file, req in pins.items():
        assert need.contains(_pinned_version(req)), f"{file}: {req} does not satisfy transformers' torch{need}"
    # the GPU routes must not pin the CPU build; all pin the same torch release
    assert "+" not in str(pins["environment.yml"]) and "+" not in str(pins["requirements.txt"])
    assert len({_pinned_version(r).base_version for r in pins.values()}) == 1, pins
    assert "-r requirements.txt" in (ROOT / "requirements-gpu.txt").read_text()


def test_torchvision_pins_agree():
    pins = _pins("torchvision")
    assert set(pins) == {"requirements-gpu.txt", "environment.yml"}, pins
    assert len({str(r.specifier) for r in pins.values()}) == 1


def test_every_transformers_pin_is_the_installed_one_and_supported():
    supported = _pyproject_requirement("transformers").specifier
    installed = Version(versions.installed("transformers"))
    assert supported.contains(installed)
    pins = _pins("transformers")
    assert set(pins) >= {"requirements.txt", "constraints.txt", "environment.yml"}, pins
    for file, req in pins.items():
        assert _pinned_version(req) == installed, f"{file}: {req} but transformers {installed} is installed"
    assert SpecifierSet(versions.supported_transformers()) == supported


def test_environment_yml_uses_no_channel_that_stops_below_the_minimum():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = [d for d in env["dependencies"] if isinstance(d, str)]
    assert not any(re.match(r"(pytorch|pytorch-cuda)\b", d) for d in names), names
    assert "pytorch" not in env["channels"]


@pytest.mark.parametrize("torch_v, tf_v, words", [
    ("2.5.1", "5.24.0", ["torch 2.5.1", "too old", "torch>=2.6"]),
    ("2.13.0+cpu", "6.0.0", ["transformers 6.0.0", "outside", ">=5.0"]),
])
def test_find_problems_names_the_version_in_one_line(torch_v, tf_v, words):
    (line,) = versions.find_problems(torch_v, tf_v, ">=2.6", ">=5.0,<6")
    assert "\n" not in line and all(w in line for w in words), line


def test_find_problems_accepts_the_pinned_pair_and_nightlies():
    assert versions.find_problems("2.13.0+cpu", "5.24.0", ">=2.6", ">=5.0,<6") == []
    assert versions.find_problems("2.14.0.dev20261101+cu130", "5.24.0", ">=2.6", ">=5.0,<6") == []
    assert versions.find_problems(None, None, None, ">=5.0,<6") == []


def _fake_dist(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name, version, words", [
    ("torch", "2.5.1", ["torch 2.5.1 is too old for transformers 5.24.0", "torch>=2.6"]),
    ("transformers", "6.0.0", ["transformers 6.0.0 is outside the range vlmflow supports"]),
])
def test_import_vlmflow_names_the_version_problem(tmp_path, name, version, words):
    requires = ('torch>=2.6; extra == "torch"',) if name == "transformers" else ()
    _fake_dist(tmp_path, name, version, requires)  # found first on sys.path: the metadata the check reads
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("VLMFLOW_SKIP_VERSION_CHECK", None)
    out = subprocess.run([sys.executable, "-c", "import vlmflow"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("vlmflow.versions.VersionProblem: "), out.stderr
    assert all(w in last for w in words), last
    env["VLMFLOW_SKIP_VERSION_CHECK"] = "1"
    ok = subprocess.run([sys.executable, "-c", "import vlmflow"], capture_output=True, text=True, env=env,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr


def test_environment_yml_pins_equal_the_cpu_constraints():
    """The conda route installs what the tested CPU environment pins (torch aside: the same release, CUDA build)."""
    cpu = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            cpu[req.name.lower().replace("_", "-")] = _pinned_version(req)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    for line in pip:
        if line.startswith("-"):
            continue
        req = Requirement(line)
        name = req.name.lower().replace("_", "-")
        if name in ("torch", "torchvision"):
            continue
        assert name in cpu and _pinned_version(req) == cpu[name], f"environment.yml {req} vs constraints.txt {cpu.get(name)}"
