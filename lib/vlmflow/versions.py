"""The versions vlmflow runs on, checked at ``import vlmflow`` from installed package metadata (nothing heavy is
imported): torch must satisfy the minimum that the installed transformers itself declares for PyTorch (its ``torch``
extra, ``torch>=2.6`` for transformers 5.24; below it transformers disables PyTorch and every model class fails later
with an obscure error), and transformers must lie in the range vlmflow declares (pyproject.toml, read back from
vlmflow's own installed metadata). A problem raises ``VersionProblem`` with one line that names it.

``VLMFLOW_SKIP_VERSION_CHECK=1`` skips the check (at your own risk). tests/unit/test_versions.py checks that the
declared bounds (pyproject.toml, requirements*.txt, constraints.txt, environment.yml) agree with transformers'.
"""
from __future__ import annotations

import os
from importlib import metadata

from vlmflow.errors import VlmflowError

# the range pyproject.toml declares, used only when vlmflow runs from a source tree without installed metadata
_FALLBACK_TRANSFORMERS_RANGE = ">=5.0,<6"


class VersionProblem(VlmflowError, ImportError):
    """torch or transformers at a version vlmflow cannot run on; the message is one line."""


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _requirement_of(dist: str, wanted: str, extra: str | None = None):
    """The ``wanted`` requirement among ``dist``'s declared ones (in the given extra, or unconditional), or None."""
    from packaging.requirements import Requirement

    try:
        lines = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return None
    for line in lines:
        req = Requirement(line)
        if req.name.lower() != wanted:
            continue
        if extra is None and req.marker is None:
            return req
        if extra is not None and req.marker is not None and req.marker.evaluate({"extra": extra}):
            return req
    return None


def transformers_torch_requirement() -> str | None:
    """The torch specifier that the installed transformers declares for PyTorch (e.g. ``>=2.6``), or None."""
    req = _requirement_of("transformers", "torch", extra="torch")
    return str(req.specifier) if req is not None else None


def supported_transformers() -> str:
    """The transformers specifier vlmflow declares (its installed metadata, else the source tree's value)."""
    req = _requirement_of("vlmflow", "transformers")
    return str(req.specifier) if req is not None else _FALLBACK_TRANSFORMERS_RANGE


def find_problems(torch_version: str | None, transformers_version: str | None, torch_requirement: str | None,
                  transformers_range: str) -> list[str]:
    """One line per version problem (empty when the versions work together). Missing packages are not judged here:
    their own import error is clear."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    problems = []
    if transformers_version is not None and not SpecifierSet(transformers_range).contains(
            Version(transformers_version), prereleases=True):
        problems.append(f"transformers {transformers_version} is outside the range vlmflow supports "
                        f"(transformers{transformers_range}); install the pinned one: pip install -c constraints.txt "
                        f"transformers")
    if torch_version is not None and torch_requirement and not SpecifierSet(torch_requirement).contains(
            Version(torch_version), prereleases=True):
        problems.append(f"torch {torch_version} is too old for transformers {transformers_version}, which requires "
                        f"torch{torch_requirement} and disables PyTorch below it; install a newer torch (GPU: "
                        f"environment.yml or requirements-gpu.txt)")
    return problems


def check() -> None:
    """Raise VersionProblem (one line) when the installed torch / transformers cannot work with vlmflow."""
    if os.environ.get("VLMFLOW_SKIP_VERSION_CHECK", "") not in ("", "0"):
        return
    problems = find_problems(installed("torch"), installed("transformers"), transformers_torch_requirement(),
                             supported_transformers())
    if problems:
        raise VersionProblem("; ".join(problems) + " (VLMFLOW_SKIP_VERSION_CHECK=1 skips this check)")
