"""The LLM judge: the paper's LLM-as-a-judge over any OpenAI-compatible chat endpoint.

Protocol (the paper's judge, with the official code's defects fixed): the model never sees the image; it lists
the tangible objects of the reference and candidate descriptions and matches them semantically (synonyms,
singular/plural, more general or specific names), reasoning first (chain of thought), guided by three worked
examples written for this project (a cyclist scene, a birthday cake, a living room) whose lists and numbers are
correct (tests/unit/test_judge_llm.py recomputes them). It answers in ONE call as structured output
(`response_format` json_schema, validated again here), at temperature 0 with seed 42. TP/FP/FN and
precision/recall/F1 are computed locally from its lists (`matching.apply_pairs`, `base.prf`); the model does no
arithmetic that we use.

Operations: the endpoint is `base_url` or $OPENAI_BASE_URL (a local vLLM / Ollama / llama.cpp server works; any
model name); the key comes from $OPENAI_API_KEY only and is never written anywhere (cache, records, logs, error
text are scrubbed of it). A disk cache (`cache.JudgeCache`) serves repeated comparisons. Retries use exponential
backoff with jitter on 429 (honouring retry-after / retry-after-ms), 5xx, timeouts and connection errors; a
malformed or truncated answer is retried and then recorded as a failed `Judgment` with its reason. `judge_many`
runs uncached pairs with bounded concurrency, or through the Batch API (`batch.run_batch`) for half the price.
Token usage and a cost estimate for each run are in `judge.last_run` (a `RunUsage`).
"""
from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from vlmflow.judge.base import Judge, JudgeError, Judgment, _check_pairs
from vlmflow.judge.cache import JudgeCache, cache_key, default_cache_dir
from vlmflow.judge.matching import MatchError, apply_pairs

log = logging.getLogger("vlmflow.judge")

DEFAULT_MODEL = "gpt-4o-2024-08-06"
PROMPT_VERSION = "vlmflow-objects-v1"  # bump whenever INSTRUCTIONS, EXAMPLES or SCHEMA change (it keys the cache)
API_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"

# USD per 1M tokens (input, output), standard synchronous tier, as published by OpenAI (mid 2025). The Batch API
# costs half. Unknown models (local servers, new models) get no estimate rather than a wrong one; pass `prices=`.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-2024-08-06": (2.50, 10.00),
    "gpt-4o-2024-11-20": (2.50, 10.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string"},
        "reference_objects": {"type": "array", "items": {"type": "string"}},
        "candidate_objects": {"type": "array", "items": {"type": "string"}},
        "matches": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"reference": {"type": "string"}, "candidate": {"type": "string"}},
                "required": ["reference", "candidate"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["reasoning", "reference_objects", "candidate_objects", "matches"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema",
                   "json_schema": {"name": "object_judgment", "strict": True, "schema": ANSWER_SCHEMA}}

INSTRUCTIONS = """\
You compare two descriptions of the same image: a REFERENCE description and a CANDIDATE description. You do not \
see the image; judge only from the two texts.

1. List the tangible, physical objects the REFERENCE mentions: things a person could point at and touch (people, \
animals, vehicles, furniture, food, tools, clothing items, plants). Do not list colours, sizes, materials or other \
attributes, positions, actions, counts, abstract things (light, weather, atmosphere, style), or places and \
backgrounds as a whole (room, street, sky, field, scene). Use a short name (a noun, with its modifier only when it \
names a different kind of object, e.g. "coffee table", "fire hydrant"). Give one entry per object: "two cars" is \
"car", "car"; a group without a number ("some people", "lit candles", "a stack of napkins") is one entry.
2. List the CANDIDATE's objects the same way.
3. Match the lists: pair a reference object with a candidate object when both words can denote the same thing in \
the image: synonyms ("sofa" / "couch"), singular and plural, or a more general and a more specific name ("man" / \
"person", "puppy" / "dog"). Each object is in at most one pair. Objects that merely look alike or sit in similar \
places (a cabinet and a bookshelf) do not match.
4. Reason step by step in "reasoning" first, then give "reference_objects", "candidate_objects" and "matches". \
Copy every name in "matches" exactly from the two lists. True positives are the matches, false negatives the \
unmatched reference objects, false positives the unmatched candidate objects; precision, recall and F1 are \
computed from your lists, so make the lists right.

Answer with a JSON object that follows the given schema."""

# The three worked examples (the official ones had wrong arithmetic; these are checked by a test).
EXAMPLES: tuple[dict[str, Any], ...] = (
    {
        "title": "a cyclist scene",
        "reference": ("A man wearing a helmet rides a bicycle down a city street. Two cars are parked along the "
                      "curb, and a dog sits next to a fire hydrant on the sidewalk."),
        "candidate": "A cyclist rides a bike on a road. A car is parked nearby and a bench stands on the sidewalk.",
        "answer": {
            "reasoning": ("Reference objects: man, helmet, bicycle, two cars (car, car), dog, fire hydrant; the "
                          "street and sidewalk are places, not objects: 7 objects. Candidate objects: cyclist, "
                          "bike, car, bench; road and sidewalk are places: 4 objects. Matches: man = cyclist (a "
                          "cyclist is a man riding), bicycle = bike (synonyms), car = car (the candidate has one "
                          "car, so only one of the two reference cars matches). TP = 3. FP = 1 (bench). FN = 4 "
                          "(helmet, the second car, dog, fire hydrant). Precision = 3/4 = 0.75, recall = 3/7 = "
                          "0.43, F1 = 2*3/(2*3+1+4) = 6/11 = 0.55."),
            "reference_objects": ["man", "helmet", "bicycle", "car", "car", "dog", "fire hydrant"],
            "candidate_objects": ["cyclist", "bike", "car", "bench"],
            "matches": [{"reference": "man", "candidate": "cyclist"},
                        {"reference": "bicycle", "candidate": "bike"},
                        {"reference": "car", "candidate": "car"}],
        },
        "counts": {"tp": 3, "fp": 1, "fn": 4},
    },
    {
        "title": "a birthday cake",
        "reference": ("A birthday cake with lit candles sits on a table. A plate, a knife and a stack of napkins "
                      "lie beside it, and a few balloons float in the background."),
        "candidate": "A chocolate cake topped with candles on a wooden table, next to two forks and a plate.",
        "answer": {
            "reasoning": ("Reference objects: cake, candles (a group without a number: one entry), table, plate, "
                          "knife, napkins (one stack: one entry), balloons (a group without a number: one entry): "
                          "7 objects. Candidate objects: cake, candles, table, two forks (fork, fork), plate: 6 "
                          "objects; chocolate and wooden are attributes. Matches: cake = cake, candles = candles, "
                          "table = table, plate = plate. TP = 4. FP = 2 (fork, fork). FN = 3 (knife, napkins, "
                          "balloons). Precision = 4/6 = 0.67, recall = 4/7 = 0.57, F1 = 2*4/(2*4+2+3) = 8/13 = "
                          "0.62."),
            "reference_objects": ["cake", "candles", "table", "plate", "knife", "napkins", "balloons"],
            "candidate_objects": ["cake", "candles", "table", "fork", "fork", "plate"],
            "matches": [{"reference": "cake", "candidate": "cake"},
                        {"reference": "candles", "candidate": "candles"},
                        {"reference": "table", "candidate": "table"},
                        {"reference": "plate", "candidate": "plate"}],
        },
        "counts": {"tp": 4, "fp": 2, "fn": 3},
    },
    {
        "title": "a living room",
        "reference": ("A cozy living room with a gray sofa, a coffee table holding a vase of flowers, a television "
                      "on a wooden cabinet, and a lamp in the corner."),
        "candidate": "A living room with a couch, a table, a TV, a bookshelf full of books and a cat sleeping on a rug.",
        "answer": {
            "reasoning": ("The living room is the place, not an object. Reference objects: sofa, coffee table, "
                          "vase, flowers, television, cabinet, lamp: 7 objects. Candidate objects: couch, table, "
                          "TV, bookshelf, books, cat, rug: 7 objects. Matches: sofa = couch (synonyms), coffee "
                          "table = table (the more general name), television = TV (synonyms). The cabinet and the "
                          "bookshelf are different pieces of furniture, so they do not match. TP = 3. FP = 4 "
                          "(bookshelf, books, cat, rug). FN = 4 (vase, flowers, cabinet, lamp). Precision = 3/7 = "
                          "0.43, recall = 3/7 = 0.43, F1 = 2*3/(2*3+4+4) = 6/14 = 0.43."),
            "reference_objects": ["sofa", "coffee table", "vase", "flowers", "television", "cabinet", "lamp"],
            "candidate_objects": ["couch", "table", "TV", "bookshelf", "books", "cat", "rug"],
            "matches": [{"reference": "sofa", "candidate": "couch"},
                        {"reference": "coffee table", "candidate": "table"},
                        {"reference": "television", "candidate": "TV"}],
        },
        "counts": {"tp": 3, "fp": 4, "fn": 4},
    },
)


def system_prompt() -> str:
    parts = [INSTRUCTIONS, "", "Three worked examples follow."]
    for i, ex in enumerate(EXAMPLES, 1):
        parts += ["", f"Example {i} ({ex['title']}).", f"REFERENCE: {ex['reference']}",
                  f"CANDIDATE: {ex['candidate']}", f"Answer: {json.dumps(ex['answer'], ensure_ascii=False)}"]
    return "\n".join(parts)


def messages_for(reference: str, candidate: str) -> list[dict[str, str]]:
    """The chat messages of one judgment: the shared instructions + examples (a cacheable prefix), then the pair."""
    return [{"role": "system", "content": system_prompt()},
            {"role": "user", "content": f"REFERENCE: {reference}\nCANDIDATE: {candidate}"}]


class MalformedAnswer(JudgeError):
    """The model's answer is not valid JSON, does not follow ANSWER_SCHEMA, or matches objects it did not list."""


def validate_answer(answer: Any) -> dict[str, Any]:
    """Check `answer` against ANSWER_SCHEMA by hand (the endpoint may ignore response_format)."""
    if not isinstance(answer, dict):
        raise MalformedAnswer(f"answer is a {type(answer).__name__}, not a JSON object")
    missing = [k for k in ANSWER_SCHEMA["required"] if k not in answer]
    if missing:
        raise MalformedAnswer(f"answer lacks {missing}")
    extra = sorted(set(answer) - set(ANSWER_SCHEMA["properties"]))
    if extra:
        raise MalformedAnswer(f"answer has unexpected fields {extra}")
    if not isinstance(answer["reasoning"], str):
        raise MalformedAnswer("'reasoning' is not a string")
    for name in ("reference_objects", "candidate_objects"):
        if not isinstance(answer[name], list) or not all(isinstance(x, str) for x in answer[name]):
            raise MalformedAnswer(f"{name!r} is not a list of strings")
    if not isinstance(answer["matches"], list):
        raise MalformedAnswer("'matches' is not a list")
    for i, m in enumerate(answer["matches"]):
        if not (isinstance(m, dict) and set(m) == {"reference", "candidate"}
                and all(isinstance(v, str) for v in m.values())):
            raise MalformedAnswer(f"matches[{i}] is not {{'reference': str, 'candidate': str}}")
    return answer


def judgment_from_answer(answer: Mapping[str, Any], usage: Mapping[str, Any] | None = None) -> Judgment:
    """A Judgment from a validated answer; raises MatchError when its matches do not fit its lists."""
    ref, cand = answer["reference_objects"], answer["candidate_objects"]
    tp, fp, fn = apply_pairs(ref, cand, [(m["reference"], m["candidate"]) for m in answer["matches"]])
    return Judgment.from_matching(ref, cand, tp, fp, fn, usage=dict(usage or {}),
                                  details={"reasoning": answer["reasoning"]})


def interpret_completion(completion: Mapping[str, Any]) -> dict[str, Any]:
    """Validated answer from a chat-completion body (dict form, as in Batch API output); raises MalformedAnswer."""
    try:
        choice = completion["choices"][0]
        message = choice.get("message") or {}
    except (KeyError, IndexError, TypeError) as exc:
        raise MalformedAnswer(f"completion has no choices ({exc})") from None
    if choice.get("finish_reason") == "length":
        raise MalformedAnswer("truncated answer (finish_reason='length')")
    if message.get("refusal"):
        raise MalformedAnswer(f"model refused: {str(message['refusal'])[:200]}")
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise MalformedAnswer("empty answer")
    try:
        answer = json.loads(content)
    except ValueError as exc:
        raise MalformedAnswer(f"answer is not valid JSON ({exc}): {content[:80]!r}") from None
    answer = validate_answer(answer)
    try:
        judgment_from_answer(answer)
    except MatchError as exc:
        raise MalformedAnswer(str(exc)) from None
    return answer


def usage_of(completion: Mapping[str, Any]) -> dict[str, int]:
    u = completion.get("usage") or {}
    return {"prompt_tokens": int(u.get("prompt_tokens") or 0), "completion_tokens": int(u.get("completion_tokens") or 0)}


def price_for(model: str, prices: Mapping[str, tuple[float, float]] | None = None) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens: exact name, else the longest known prefix (dated snapshots), else None."""
    table = {**PRICES, **(prices or {})}
    if model in table:
        return table[model]
    prefixes = [name for name in table if model.startswith(name)]
    return table[max(prefixes, key=len)] if prefixes else None


def estimate_cost(model: str, prompt_tokens: int, completion_tokens: int, batch: bool = False,
                  prices: Mapping[str, tuple[float, float]] | None = None) -> float | None:
    price = price_for(model, prices)
    if price is None:
        return None
    cost = (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
    return cost / 2 if batch else cost


@dataclass
class RunUsage:
    """What one `judge_many` run did and cost. Tokens count every paid request, retries included."""

    model: str
    pairs: int = 0
    cache_hits: int = 0
    api_requests: int = 0
    retries: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    batch: bool = False
    cost_usd: float | None = None
    failures: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        cost = "unknown price" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        mode = " (Batch API: half price)" if self.batch else ""
        return (f"{self.model}: {self.pairs} pairs, {self.cache_hits} from cache, {self.api_requests} requests "
                f"({self.retries} retries), {self.failed} failed; tokens in {self.prompt_tokens}, out "
                f"{self.completion_tokens}; estimated cost {cost}{mode}")


class LLMJudge(Judge):
    """LLM-as-a-judge over an OpenAI-compatible endpoint. See the module docstring for the protocol.

    Options: model, base_url (default $OPENAI_BASE_URL, else OpenAI), cache_dir (None: the default folder;
    False: no cache), concurrency (parallel requests), max_attempts (per pair), timeout (seconds per request),
    backoff_base / backoff_max (seconds), temperature, seed, max_tokens, prices (extra price table entries),
    batch_poll_interval (seconds), record_dir (where Batch API request/response JSONL are kept; default
    <cache_dir>/batches), client (an already built openai.OpenAI, for tests or custom transports).
    """

    name = "llm"
    version = PROMPT_VERSION

    def __init__(self, model: str = DEFAULT_MODEL, base_url: str | None = None, cache_dir: str | Path | None | bool = None,
                 concurrency: int = 8, max_attempts: int = 5, timeout: float = 120.0, backoff_base: float = 1.0,
                 backoff_max: float = 60.0, temperature: float = 0.0, seed: int | None = 42, max_tokens: int = 2048,
                 prices: Mapping[str, tuple[float, float]] | None = None, batch_poll_interval: float = 30.0,
                 batch_timeout: float = 26 * 3600.0, record_dir: str | Path | None = None, client: Any = None,
                 sleep: Callable[[float], None] = time.sleep):
        if max_attempts < 1 or concurrency < 1:
            raise JudgeError(f"max_attempts ({max_attempts}) and concurrency ({concurrency}) must be >= 1")
        self.model = model
        self.base_url = base_url or os.environ.get(BASE_URL_ENV) or None
        self.cache = None if cache_dir is False else JudgeCache(default_cache_dir() if cache_dir in (None, True) else cache_dir)
        self.concurrency, self.max_attempts, self.timeout = concurrency, max_attempts, timeout
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.temperature, self.seed, self.max_tokens = temperature, seed, max_tokens
        self.prices = dict(prices or {})
        self.batch_poll_interval, self.batch_timeout = batch_poll_interval, batch_timeout
        self.record_dir = Path(record_dir) if record_dir else None
        self._client, self._sleep = client, sleep
        self._lock = threading.Lock()
        self._random = random.Random()
        self.last_run: RunUsage | None = None

    # ---- configuration ---------------------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        return {"judge": self.name, "judge_version": PROMPT_VERSION, "judge_model": self.model,
                "judge_base_url": self.base_url or "https://api.openai.com/v1", "temperature": self.temperature,
                "seed": self.seed}

    @property
    def client(self):
        """The openai client, built on first use (a fully cached run needs no key). Retries are ours, not its."""
        with self._lock:
            if self._client is None:
                import openai

                key = os.environ.get(API_KEY_ENV)
                if not key:
                    if not self.base_url:
                        raise JudgeError(f"the LLM judge ({self.model}) needs ${API_KEY_ENV} in the environment "
                                         f"(or ${BASE_URL_ENV} / --base-url pointing at a server that needs no key)")
                    key = "no-key"  # local OpenAI-compatible servers (vLLM, Ollama, llama.cpp) ignore it
                self._client = openai.OpenAI(api_key=key, base_url=self.base_url, timeout=self.timeout, max_retries=0)
            return self._client

    def request_body(self, reference: str, candidate: str, max_tokens: int | None = None) -> dict[str, Any]:
        """The chat.completions request (also the body of a Batch API line)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages_for(reference, candidate),
                                "temperature": self.temperature, "response_format": RESPONSE_FORMAT,
                                "max_tokens": max_tokens or self.max_tokens}
        if self.seed is not None:
            body["seed"] = self.seed
        return body

    def key(self, reference: str, candidate: str) -> str:
        return cache_key(self.model, PROMPT_VERSION, reference, candidate)

    # ---- judging ---------------------------------------------------------------------------------------------
    def judge(self, reference: str, candidate: str) -> Judgment:
        return self.judge_many([(reference, candidate)], progress=False)[0]

    def judge_many(self, pairs: Sequence[tuple[str, str]], progress: bool = True, batch: bool = False) -> list[Judgment]:
        """Judge pairs (results in input order): cache first, then the API (threads, or the Batch API).

        Identical pairs are asked once. `self.last_run` holds the run's RunUsage afterwards.
        """
        from tqdm.auto import tqdm

        from vlmflow.progress import bar_disabled

        pairs = _check_pairs(pairs)
        run = RunUsage(model=self.model, pairs=len(pairs), batch=batch)
        keys = [self.key(r, c) for r, c in pairs]
        results: dict[str, Judgment] = {}
        todo: dict[str, tuple[str, str]] = {}
        for k, (r, c) in zip(keys, pairs):
            if k in results or k in todo:
                continue
            hit = self._from_cache(k)
            if hit is not None:
                results[k] = hit
            else:
                todo[k] = (r, c)
        run.cache_hits = sum(1 for k in keys if k in results)
        if todo and batch:
            from vlmflow.judge.batch import run_batch

            results.update(run_batch(self, todo, run, progress=progress))
        elif todo:
            with tqdm(total=len(todo), desc=f"judge[llm {self.model}]", disable=bar_disabled(progress)) as bar, \
                    ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo))) as pool:
                futures = {pool.submit(self._judge_uncached, k, r, c, run): k for k, (r, c) in todo.items()}
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update(1)
        out = [results[k] for k in keys]
        run.failed = sum(1 for j in out if not j.ok)
        for j in out:
            if not j.ok:
                kind = j.failed.split(":")[0][:60]
                run.failures[kind] = run.failures.get(kind, 0) + 1
        run.cost_usd = estimate_cost(self.model, run.prompt_tokens, run.completion_tokens, batch, self.prices)
        self.last_run = run
        log.info("LLM judge run: %s", run.summary())
        return out

    def _from_cache(self, key: str) -> Judgment | None:
        if self.cache is None:
            return None
        record = self.cache.get(key)
        if record is None:
            return None
        try:
            return judgment_from_answer(validate_answer(record["answer"]), {**record.get("usage", {}), "cached": True})
        except (KeyError, JudgeError) as exc:
            log.warning("ignoring invalid judge cache entry %s (%s)", self.cache.path(key), exc)
            return None

    def store(self, key: str, reference: str, candidate: str, answer: dict[str, Any], usage: Mapping[str, Any]) -> None:
        if self.cache is not None:
            self.cache.put(key, {"model": self.model, "prompt_version": PROMPT_VERSION, "reference": reference,
                                 "candidate": candidate, "answer": answer, "usage": dict(usage),
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def _judge_uncached(self, key: str, reference: str, candidate: str, run: RunUsage) -> Judgment:
        """One pair through the API with retries; never raises for a bad answer (returns a failed Judgment)."""
        import openai

        reasons: list[str] = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        max_tokens = self.max_tokens
        for attempt in range(self.max_attempts):
            wait = self._backoff(attempt)
            try:
                with self._lock:
                    run.api_requests += 1
                    run.retries += attempt > 0
                completion = self.client.chat.completions.create(
                    **self.request_body(reference, candidate, max_tokens)).model_dump()
            except openai.RateLimitError as exc:
                reasons.append("HTTP 429 rate limited")
                wait = max(wait, _retry_after(exc.response.headers) or 0.0)
            except openai.APIStatusError as exc:
                code = exc.status_code
                if code in (401, 403, 404):  # configuration errors: every other pair would fail the same way
                    raise JudgeError(self._redact(f"LLM judge endpoint {self.base_url or 'api.openai.com'} refused "
                                                  f"model {self.model!r}: HTTP {code} {exc.message}"[:500])) from None
                if code < 500 and code not in (408, 409):
                    return self._failure(f"HTTP {code}: {exc.message}"[:300], usage)
                reasons.append(f"HTTP {code}")
                wait = max(wait, _retry_after(exc.response.headers) or 0.0)
            except openai.APITimeoutError:
                reasons.append(f"timeout after {self.timeout} s")
            except openai.APIConnectionError as exc:
                reasons.append(f"connection error ({type(exc.__cause__).__name__ if exc.__cause__ else 'unknown'})")
            else:
                got = usage_of(completion)
                with self._lock:
                    run.prompt_tokens += got["prompt_tokens"]
                    run.completion_tokens += got["completion_tokens"]
                for k in usage:
                    usage[k] += got[k]
                try:
                    answer = interpret_completion(completion)
                except MalformedAnswer as exc:
                    reasons.append(f"malformed answer: {exc}" if "truncated" not in str(exc) else str(exc))
                    if "truncated" in str(exc):
                        max_tokens = min(2 * max_tokens, 16384)  # give a long answer room on the next try
                    wait = min(wait, self.backoff_base)  # a bad answer is not a load problem: retry soon
                else:
                    self.store(key, reference, candidate, answer, usage)
                    return judgment_from_answer(answer, {**usage, "cached": False})
            if attempt + 1 < self.max_attempts:
                log.warning("LLM judge: %s; retry %d/%d in %.2f s", reasons[-1], attempt + 1, self.max_attempts - 1, wait)
                self._sleep(wait)
        return self._failure(f"gave up after {self.max_attempts} attempts: " + "; ".join(reasons), usage)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with 'equal jitter': half fixed, half random, capped."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** attempt)
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)

    def _failure(self, reason: str, usage: Mapping[str, Any]) -> Judgment:
        return Judgment.failure(self._redact(reason), usage={**usage, "cached": False})

    @staticmethod
    def _redact(text: str) -> str:
        key = os.environ.get(API_KEY_ENV)
        return text.replace(key, "***") if key else text


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from retry-after-ms / retry-after (seconds or an HTTP date); None when absent or bad."""
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
