"""Disk cache of LLM judgments, so that no comparison is paid for twice.

Key: sha256 of (judge model, prompt version, reference text, candidate text); value: one JSON file
``<folder>/<key[:2]>/<key>.json`` holding the validated structured answer, the token usage and those four inputs
(for auditing). Writes are atomic (`vlmflow.atomic`: temporary file in the same folder + `os.replace`), so concurrent workers and
interrupted runs never leave a half-written entry; a corrupt entry reads as a miss. Only successful answers are
cached: a failed judgment is retried on the next run. Nothing secret is ever stored (the API key is not an input).
Used by `llm.LLMJudge` (synchronous calls) and `batch.run_batch` (merging Batch API output).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from vlmflow.atomic import atomic_write_json

log = logging.getLogger("vlmflow.judge")


def default_cache_dir() -> Path:
    """$VLMFLOW_JUDGE_CACHE, else $XDG_CACHE_HOME/vlmflow/judge, else ~/.cache/vlmflow/judge."""
    if os.environ.get("VLMFLOW_JUDGE_CACHE"):
        return Path(os.environ["VLMFLOW_JUDGE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vlmflow" / "judge"


def cache_key(model: str, prompt_version: str, reference: str, candidate: str) -> str:
    payload = json.dumps([model, prompt_version, reference, candidate], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgeCache:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable judge cache entry %s (%s)", path, exc)
            return None
        return record if isinstance(record, dict) and record.get("key") == key else None

    def put(self, key: str, record: dict[str, Any]) -> Path:
        return atomic_write_json(self.path(key), {**record, "key": key}, ensure_ascii=False, indent=1)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("??/*.json")) if self.folder.is_dir() else 0
