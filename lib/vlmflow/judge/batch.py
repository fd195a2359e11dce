"""The OpenAI Batch API flow for bulk LLM judging (half the price of synchronous calls, results within 24 h).

`run_batch(judge, todo, run)` is what `LLMJudge.judge_many(pairs, batch=True)` calls for the pairs the cache
does not hold:
  1. write the request JSONL (one line per pair: custom_id = the cache key, the same body as a synchronous call);
  2. upload it (`files.create(purpose="batch")`) and create the batch (`batches.create`, /v1/chat/completions, 24h);
  3. poll `batches.retrieve` until a terminal status, with a progress bar of completed requests;
  4. download the output (and error) file (`files.content`) and merge every valid answer into the cache;
     answers that are malformed, truncated or missing become failed judgments with the reason (a later run asks
     again, synchronously or in a new batch).
The record folder ``<record_dir>/<request-file sha256[:16]>/`` keeps requests.jsonl, batch.json, output.jsonl and
errors.jsonl. It is also the resume point: rerunning the same pairs finds batch.json and polls that batch instead
of paying for a second one. No key is written: request bodies hold only the model, messages and settings.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmflow.atomic import atomic_write
from vlmflow.judge.base import JudgeError, Judgment

if TYPE_CHECKING:  # pragma: no cover
    from vlmflow.judge.llm import LLMJudge, RunUsage

log = logging.getLogger("vlmflow.judge")

ENDPOINT = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "expired", "cancelled"}


def request_lines(judge: "LLMJudge", todo: dict[str, tuple[str, str]]) -> bytes:
    """The Batch API input file: one JSON line per pair, custom_id = the pair's cache key (sorted: reproducible)."""
    lines = [json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": judge.request_body(r, c)},
                        ensure_ascii=False) for key, (r, c) in sorted(todo.items())]
    return ("\n".join(lines) + "\n").encode("utf-8")


def run_batch(judge: "LLMJudge", todo: dict[str, tuple[str, str]], run: "RunUsage",
              progress: bool = True) -> dict[str, Judgment]:
    """Judge `todo` (cache key -> (reference, candidate)) through the Batch API; returns key -> Judgment."""
    client = judge.client
    root = judge.record_dir or (judge.cache.folder / "batches" if judge.cache is not None else Path("judge_batches"))
    data = request_lines(judge, todo)
    folder = root / hashlib.sha256(data).hexdigest()[:16]
    requests = atomic_write(folder / "requests.jsonl", data)

    batch = _resume(client, folder)
    if batch is None:
        uploaded = client.files.create(file=(requests.name, data), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h",
                                      metadata={"vlmflow": "judge", "prompt_version": judge.version})
        run.api_requests += 2
        _save_batch(folder, batch)
        log.info("LLM judge: submitted batch %s (%d requests), record in %s", batch.id, len(todo), folder)
    batch = _poll(judge, client, batch, folder, len(todo), progress, run)
    outputs = _download(client, batch, folder, run)
    return {key: _judgment(judge, batch, outputs.get(key), key, reference, candidate, run)
            for key, (reference, candidate) in todo.items()}


def _download(client: Any, batch: Any, folder: Path, run: "RunUsage") -> dict[str, dict[str, Any]]:
    """custom_id -> output line of a finished batch (its output and error files, both kept in ``folder``)."""
    outputs: dict[str, dict[str, Any]] = {}
    for attr, name in (("output_file_id", "output.jsonl"), ("error_file_id", "errors.jsonl")):
        file_id = getattr(batch, attr, None)
        if not file_id:
            continue
        data = client.files.content(file_id).content
        run.api_requests += 1
        atomic_write(folder / name, data)
        for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
            if line.strip():
                try:
                    item = json.loads(line)
                    outputs.setdefault(item["custom_id"], item)
                except (ValueError, KeyError, TypeError):
                    log.warning("batch %s: unreadable line %d of %s", batch.id, n, name)
    return outputs


def _judgment(judge: "LLMJudge", batch: Any, item: dict | None, key: str, reference: str, candidate: str,
              run: "RunUsage") -> Judgment:
    """One pair's judgment from its output line (stored in the judge's cache), or a failure naming why."""
    from vlmflow.judge.llm import MalformedAnswer, interpret_completion, judgment_from_answer, usage_of

    if item is None:
        return Judgment.failure(f"batch {batch.id}: no output for this pair (batch status {batch.status})")
    response, error = item.get("response") or {}, item.get("error")
    body = response.get("body") or {}
    if error or response.get("status_code") != 200:
        detail = error.get("message") if isinstance(error, dict) else error
        if not detail and isinstance(body, dict) and isinstance(body.get("error"), dict):
            detail = body["error"].get("message")
        return Judgment.failure(judge._redact(
            f"batch {batch.id}: request failed (HTTP {response.get('status_code')}): {detail}"[:300]))
    usage = usage_of(body)
    run.prompt_tokens += usage["prompt_tokens"]
    run.completion_tokens += usage["completion_tokens"]
    try:
        answer = interpret_completion(body)
    except MalformedAnswer as exc:
        return Judgment.failure(judge._redact(f"batch {batch.id}: {exc}"), usage={**usage, "cached": False})
    judge.store(key, reference, candidate, answer, usage)
    return judgment_from_answer(answer, {**usage, "cached": False, "batch": batch.id})


def _resume(client: Any, folder: Path):
    """The batch recorded in `folder`, if it can still deliver (not failed / expired / cancelled)."""
    saved = folder / "batch.json"
    if not saved.is_file():
        return None
    batch_id = json.loads(saved.read_text()).get("id")
    batch = client.batches.retrieve(batch_id)
    if batch.status in ("failed", "expired", "cancelled", "cancelling"):
        log.warning("batch %s recorded in %s ended %s; submitting a new one", batch_id, folder, batch.status)
        return None
    log.info("LLM judge: resuming batch %s (%s) from %s", batch_id, batch.status, folder)
    return batch


def _poll(judge: "LLMJudge", client: Any, batch: Any, folder: Path, total: int, progress: bool, run: "RunUsage"):
    import openai
    from tqdm.auto import tqdm

    from vlmflow.progress import bar_disabled

    deadline = time.monotonic() + judge.batch_timeout
    with tqdm(total=total, desc=f"batch {batch.id}", disable=bar_disabled(progress)) as bar:
        while batch.status not in TERMINAL:
            if time.monotonic() > deadline:
                raise JudgeError(f"batch {batch.id} still {batch.status!r} after {judge.batch_timeout:.0f} s; its "
                                 f"record is {folder}: rerun the same pairs later to resume it")
            judge._sleep(judge.batch_poll_interval)
            run.api_requests += 1
            try:
                batch = client.batches.retrieve(batch.id)
            except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError) as exc:
                log.warning("batch %s: polling failed (%s); trying again", batch.id, type(exc).__name__)
                continue
            counts = getattr(batch, "request_counts", None)
            if counts is not None:
                bar.n = int(counts.completed or 0) + int(counts.failed or 0)
                bar.set_postfix_str(batch.status)
                bar.refresh()
    _save_batch(folder, batch)
    if batch.status != "completed":
        errors = getattr(batch, "errors", None)
        log.warning("batch %s ended %s: %s", batch.id, batch.status, errors)
    return batch


def _save_batch(folder: Path, batch: Any) -> None:
    atomic_write(folder / "batch.json", batch.model_dump_json(indent=1).encode("utf-8"))
