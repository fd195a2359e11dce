"""LLM judge end to end through the real openai client against a local fake server (tests/unit/fake_openai_server.py):
scripted structured answers, injected faults, retries, cache, failure records, the Batch API flow, no key leaks."""
import io
import json
import logging
import re
import secrets
import sys
from contextlib import redirect_stdout
from fractions import Fraction
from pathlib import Path

import pytest

from vlmflow.judge import JudgeError, aggregate, prf
from vlmflow.judge.llm import (
    ANSWER_SCHEMA,
    DEFAULT_MODEL,
    EXAMPLES,
    PROMPT_VERSION,
    LLMJudge,
    estimate_cost,
    system_prompt,
    validate_answer,
)
from vlmflow.judge.matching import apply_pairs

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai_server import USAGE, FakeOpenAI  # noqa: E402

SECRET = "sk-test-SECRET-" + secrets.token_hex(8)

# Scripted answers, looked up by a unique word of the pair's reference text.
ANSWERS = {
    "zeppelin": {"reasoning": "r1", "reference_objects": ["man", "zeppelin", "dog"], "candidate_objects": ["person", "cat"],
                 "matches": [{"reference": "man", "candidate": "person"}]},
    "harpsichord": {"reasoning": "r2", "reference_objects": ["harpsichord", "chair"],
                    "candidate_objects": ["piano", "chair"],
                    "matches": [{"reference": "chair", "candidate": "chair"}]},
    "walrus": {"reasoning": "r3", "reference_objects": ["walrus"], "candidate_objects": ["walrus"],
               "matches": [{"reference": "walrus", "candidate": "walrus"}]},
    "liar": {"reasoning": "matches an object it never listed", "reference_objects": ["cup"], "candidate_objects": ["mug"],
             "matches": [{"reference": "plate", "candidate": "mug"}]},
}
PAIR = {k: (f"A scene with a {k} and more.", f"Another view without the {k}.") for k in ANSWERS}


def responder(body):
    user = body["messages"][-1]["content"]
    return next(answer for word, answer in ANSWERS.items() if word in user)


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return tmp_path


def make_judge(server, tmp_path, sleeps=None, **kw):
    options = dict(base_url=server.base_url, cache_dir=tmp_path / "cache", record_dir=tmp_path / "batches",
                   timeout=0.4, backoff_base=0.01, backoff_max=0.05, concurrency=1, max_attempts=6,
                   batch_poll_interval=0.01, sleep=(lambda s: sleeps.append(s)) if sleeps is not None else None)
    options.update(kw)
    if options["sleep"] is None:
        del options["sleep"]
    return LLMJudge(**options)


def test_faults_are_retried_then_answered(env):
    sleeps = []
    with FakeOpenAI(responder, expected_key=SECRET, faults=["429", "500", "hang", "malformed", "truncated"],
                    retry_after=0.2, hang_seconds=1.2) as server:
        judge = make_judge(server, env, sleeps)
        j = judge.judge(*PAIR["zeppelin"])
        requests = server.chat_requests()
    assert j.ok and j.tp == (("man", "person"),) and j.fn == ("zeppelin", "dog") and j.fp == ("cat",)
    assert (j.precision, j.recall, j.f1) == pytest.approx(prf(1, 1, 2))
    assert len(requests) == 6 and all(r["auth_ok"] for r in requests)     # 5 faults + the good answer
    assert sleeps[0] >= 0.2                                                # retry-after honoured after the 429
    assert len(sleeps) == 5 and all(s <= 0.2 for s in sleeps)
    run = judge.last_run
    assert run.api_requests == 6 and run.retries == 5 and run.failed == 0 and run.cache_hits == 0
    # tokens of every answer that came back (malformed, truncated, good) are counted: they are paid for
    assert run.prompt_tokens == 3 * USAGE["prompt_tokens"] and run.completion_tokens == 3 * USAGE["completion_tokens"]
    assert run.cost_usd == pytest.approx(estimate_cost(DEFAULT_MODEL, run.prompt_tokens, run.completion_tokens))
    body = requests[-1]["body"]
    assert body["model"] == DEFAULT_MODEL and body["temperature"] == 0 and body["seed"] == 42
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["response_format"]["json_schema"]["schema"] == ANSWER_SCHEMA
    assert body["max_tokens"] == 2 * requests[0]["body"]["max_tokens"]    # the truncated answer got more room


def test_second_identical_request_is_served_from_cache(env):
    with FakeOpenAI(responder, expected_key=SECRET) as server:
        first = make_judge(server, env).judge(*PAIR["harpsichord"])
        n = len(server.log)
        again = make_judge(server, env)  # a new judge (new process, same cache folder)
        second = again.judge(*PAIR["harpsichord"])
        assert len(server.log) == n == 1
    assert second.tp == first.tp and second.f1 == first.f1 == pytest.approx(0.5)
    assert second.usage["cached"] is True and first.usage["cached"] is False
    assert again.last_run.cache_hits == 1 and again.last_run.api_requests == 0 and again.last_run.cost_usd == 0
    # a different model or prompt version is a different key
    with FakeOpenAI(responder) as server:
        make_judge(server, env, model="local-llama").judge(*PAIR["harpsichord"])
        assert len(server.log) == 1


def test_bad_answers_end_as_recorded_failures_and_are_not_cached(env):
    with FakeOpenAI(responder, expected_key=SECRET, faults_for={"walrus": ["malformed", "truncated", "malformed"]}) as server:
        judge = make_judge(server, env, max_attempts=3)
        results = judge.judge_many([PAIR["walrus"], PAIR["liar"], PAIR["harpsichord"]], progress=False)
        assert len(server.chat_requests()) == 3 + 3 + 1
        walrus, liar, ok = results
        assert not walrus.ok and walrus.f1 is None
        assert walrus.failed.startswith("gave up after 3 attempts")
        assert "malformed answer: answer is not valid JSON" in walrus.failed and "truncated" in walrus.failed
        assert not liar.ok and "'plate' is not in the reference list" in liar.failed
        assert ok.ok
        agg = aggregate(results)
        assert agg.n_failed == 2 and agg.mean_f1 == pytest.approx(0.5)
        assert judge.last_run.failed == 2
        # failures are retried by the next run (not cached); the good one is not asked again
        again = make_judge(server, env, max_attempts=1).judge_many([PAIR["walrus"], PAIR["harpsichord"]], progress=False)
        assert again[0].ok and again[1].ok and len(server.chat_requests()) == 8


def test_concurrent_run_keeps_order_and_asks_duplicates_once(env):
    keys = ["zeppelin", "harpsichord", "walrus", "zeppelin", "walrus"]
    with FakeOpenAI(responder, faults_for={"zeppelin": ["500"], "walrus": ["429"]}) as server:
        judge = make_judge(server, env, concurrency=3)
        results = judge.judge_many([PAIR[k] for k in keys], progress=False)
        assert len(server.chat_requests()) == 3 + 2  # 3 distinct pairs + 2 retries
    for k, j in zip(keys, results):
        assert list(j.reference_objects) == ANSWERS[k]["reference_objects"]


def test_configuration_error_raises_without_the_key(env, monkeypatch):
    with FakeOpenAI(responder, expected_key="sk-other-key") as server:
        with pytest.raises(JudgeError) as info:
            make_judge(server, env).judge(*PAIR["walrus"])
    assert "HTTP 401" in str(info.value) and SECRET not in str(info.value)
    assert "Incorrect API key" in str(info.value)  # the server's message, with the echoed key scrubbed
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(JudgeError, match="OPENAI_API_KEY"):
        LLMJudge(cache_dir=False).judge("a", "b")


def test_batch_api_flow(env):
    pairs = [PAIR["zeppelin"], PAIR["harpsichord"], PAIR["walrus"], PAIR["liar"]]
    with FakeOpenAI(responder, expected_key=SECRET, batch_faults={"walrus": "error", "liar": "malformed"}) as server:
        judge = make_judge(server, env)
        judge.judge(*PAIR["zeppelin"])  # cached before the batch: not part of it
        n0 = len(server.log)
        results = judge.judge_many(pairs, progress=False, batch=True)
        calls = [(e["method"], re.sub(r"-\d+", "-N", e["path"])) for e in server.log[n0:]]
        assert calls[:2] == [("POST", "/v1/files"), ("POST", "/v1/batches")]
        assert calls.count(("GET", "/v1/batches/batch-N")) >= 2  # polled until completed
        assert calls.count(("GET", "/v1/files/file-N/content")) == 2  # output and error files
        assert all(e["auth_ok"] for e in server.log)
        uploaded = next(f for f in server.files.values() if f["object"]["purpose"] == "batch")
        lines = [json.loads(x) for x in uploaded["data"].decode().splitlines()]
        assert len(lines) == 3 and {x["url"] for x in lines} == {"/v1/chat/completions"}
        assert {x["custom_id"] for x in lines} == {judge.key(*p) for p in pairs[1:]}
        assert all(x["body"]["seed"] == 42 and x["body"]["temperature"] == 0 for x in lines)
        zeppelin, harpsichord, walrus, liar = results
        assert zeppelin.ok and zeppelin.usage["cached"] and harpsichord.ok and harpsichord.f1 == pytest.approx(0.5)
        assert not walrus.ok and "request failed" in walrus.failed and "scripted failure" in walrus.failed
        assert not liar.ok and "not valid JSON" in liar.failed
        run = judge.last_run
        assert run.batch and run.cache_hits == 1 and run.failed == 2
        assert run.prompt_tokens == 2 * USAGE["prompt_tokens"]  # the two lines that returned a completion
        assert run.cost_usd == pytest.approx(estimate_cost(DEFAULT_MODEL, run.prompt_tokens, run.completion_tokens) / 2)
        # the record: request and response JSONL kept
        (folder,) = [p for p in (env / "batches").iterdir() if p.is_dir()]
        assert {p.name for p in folder.iterdir()} == {"requests.jsonl", "batch.json", "output.jsonl", "errors.jsonl"}
        assert (folder / "requests.jsonl").read_bytes() == uploaded["data"]
        assert json.loads((folder / "batch.json").read_text())["status"] == "completed"
        # merged into the cache: the good pair is now free
        n1 = len(server.log)
        again = make_judge(server, env).judge_many([PAIR["harpsichord"]], progress=False, batch=True)
        assert again[0].ok and again[0].usage["cached"] and len(server.log) == n1


def test_no_key_in_any_file_log_or_error(env, caplog):
    """Everything written by sync, failing, batch and CLI runs, plus logs and errors: the key appears nowhere."""
    from vlmflow.cli import main

    caplog.set_level(logging.DEBUG)
    pairs_file = env / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps({"pair_id": k, "reference": r, "candidate": c}) + "\n"
                                  for k, (r, c) in PAIR.items()))
    errors = []
    with FakeOpenAI(responder, expected_key=SECRET, faults=["429", "500", "malformed"],
                    batch_faults={"walrus": "error"}) as server:
        judge = make_judge(server, env)
        judge.judge_many(list(PAIR.values())[:2], progress=False)
        make_judge(server, env, cache_dir=env / "cache2").judge_many(list(PAIR.values()), progress=False, batch=True)
        out = io.StringIO()
        with redirect_stdout(out):
            assert main(["judge", "--judge", "llm", "--base-url", server.base_url, "--cache-dir", str(env / "cache3"),
                         "--pairs", str(pairs_file), "--out", str(env / "judged.jsonl"), "--no-progress",
                         "--max-attempts", "2", "--timeout", "2", "--allow-failures"]) == 0
        rows = [json.loads(x) for x in (env / "judged.jsonl").read_text().splitlines()]
        assert [r["pair_id"] for r in rows] == list(PAIR) and rows[0]["tp"] == ["man"]
    with FakeOpenAI(responder, expected_key="sk-other") as server:  # echoes the wrong (our) key in its 401
        try:
            make_judge(server, env).judge("x walrus", "y")
        except JudgeError as exc:
            errors.append(repr(exc) + str(exc))
    assert errors
    written = [p for p in env.rglob("*") if p.is_file()]
    assert len(written) >= 10
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text and SECRET not in out.getvalue()
    assert all(SECRET not in e for e in errors)


def test_cli_single_pair_json(env):
    from vlmflow.cli import main

    with FakeOpenAI(responder) as server:
        out = io.StringIO()
        with redirect_stdout(out):
            main(["judge", "--judge", "llm", "--base-url", server.base_url, "--cache-dir", str(env / "c"),
                  "--reference", PAIR["zeppelin"][0], "--candidate", PAIR["zeppelin"][1], "--json"])
    got = json.loads(out.getvalue())
    assert got["tp"] == ["man"] and got["fp"] == ["cat"] and got["fn"] == ["zeppelin", "dog"]
    assert got["precision"] == 0.5 and got["recall"] == pytest.approx(1 / 3) and got["f1"] == pytest.approx(0.4)


# ---- the prompt's worked examples: correct lists and arithmetic ----------------------------------------------------
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e["title"])
def test_worked_examples_are_correct(example):
    answer = validate_answer(example["answer"])
    ref, cand = answer["reference_objects"], answer["candidate_objects"]
    tp, fp, fn = apply_pairs(ref, cand, [(m["reference"], m["candidate"]) for m in answer["matches"]])
    counts = example["counts"]
    assert (len(tp), len(fp), len(fn)) == (counts["tp"], counts["fp"], counts["fn"])
    text = answer["reasoning"]
    # every number the reasoning states agrees with the lists
    assert f"TP = {counts['tp']}." in text and f"FP = {counts['fp']} (" in text and f"FN = {counts['fn']} (" in text
    assert f"{len(ref)} objects" in text and f"{len(cand)} objects" in text
    for name in fp:
        assert name in text.split("FP =")[1].split(")")[0]
    for name in set(fn):
        assert name in text.split("FN =")[1].split(")")[0]
    p, r, f1 = prf(len(tp), len(fp), len(fn))
    fractions = re.findall(r"(Precision|recall|F1) = (?:[^=]*= )?(\d+)/(\d+) = (0\.\d+)", text)
    assert {name for name, *_ in fractions} == {"Precision", "recall", "F1"}
    for name, num, den, dec in fractions:
        value = {"Precision": p, "recall": r, "F1": f1}[name]
        assert Fraction(int(num), int(den)) == Fraction(value).limit_denominator(1000)
        assert abs(float(dec) - value) < 0.005
    assert example["reference"] in system_prompt() and example["candidate"] in system_prompt()


def test_prompt_names_the_protocol():
    prompt = system_prompt()
    assert "tangible" in prompt and "step by step" in prompt
    assert [e["title"] for e in EXAMPLES] == ["a cyclist scene", "a birthday cake", "a living room"]
    assert isinstance(PROMPT_VERSION, str) and PROMPT_VERSION
