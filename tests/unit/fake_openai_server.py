"""A local OpenAI-compatible HTTP server for the LLM judge's tests: chat completions, files and batches.

Started by a test on 127.0.0.1 with a free port, served from a daemon thread, and bounded: it stops itself after
`max_lifetime` seconds, and a "hang" sleeps at most `hang_seconds`. It answers with scripted structured output
(`responder(request_body) -> answer dict`) and injects faults in the order the test scripts them:

    "429"        HTTP 429 with a retry-after header (`retry_after` seconds)
    "500"        HTTP 500
    "hang"       no answer for `hang_seconds` (past the client's timeout), then a normal answer nobody reads
    "malformed"  a 200 answer whose content is not JSON
    "truncated"  a 200 answer cut short: partial JSON and finish_reason "length"
    "ok"         a normal answer

`faults` is consumed by successive chat requests; `faults_for` maps a substring of the user message to its own
queue (for concurrent tests). `batch_faults` maps a substring to a fault applied when a batch line is processed
("malformed" or "error"). Every request is logged in `log` (method, path, whether the bearer key was the expected
one, the JSON body): the log never keeps the Authorization header itself.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USAGE = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}


class FakeOpenAI:
    def __init__(self, responder: Callable[[dict], dict], *, expected_key: str | None = None,
                 faults: list[str] | None = None, faults_for: dict[str, list[str]] | None = None,
                 batch_faults: dict[str, str] | None = None, retry_after: float = 0.05,
                 hang_seconds: float = 1.5, max_lifetime: float = 60.0, batch_polls_before_done: int = 2):
        self.responder = responder
        self.expected_key = expected_key
        self.faults = deque(faults or [])
        self.faults_for = {k: deque(v) for k, v in (faults_for or {}).items()}
        self.batch_faults = dict(batch_faults or {})
        self.retry_after, self.hang_seconds = retry_after, min(hang_seconds, 10.0)
        self.max_lifetime, self.batch_polls_before_done = max_lifetime, batch_polls_before_done
        self.log: list[dict[str, Any]] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._ids = 0
        self._server: ThreadingHTTPServer | None = None
        self._timer: threading.Timer | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> "FakeOpenAI":
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._timer = threading.Timer(self.max_lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # ---- helpers -----------------------------------------------------------------------------------------------
    def chat_requests(self) -> list[dict[str, Any]]:
        return [e for e in self.log if e["path"].endswith("/chat/completions")]

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}-{self._ids}"

    def _next_fault(self, user_text: str) -> str:
        with self._lock:
            for needle, queue in self.faults_for.items():
                if needle in user_text and queue:
                    return queue.popleft()
            return self.faults.popleft() if self.faults else "ok"

    def completion(self, body: dict, fault: str) -> dict[str, Any]:
        """A chat.completion object for `body` with a content fault ("ok", "malformed", "truncated")."""
        content, finish = json.dumps(self.responder(body)), "stop"
        if fault == "malformed":
            content = "Sure! Here are the objects: {reference_objects: [man, dog"
        elif fault == "truncated":
            content, finish = content[: len(content) // 2], "length"
        return {"id": self._new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "fake"), "system_fingerprint": "fake",
                "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                             "message": {"role": "assistant", "content": content, "refusal": None}}],
                "usage": dict(USAGE)}

    def _finish_batch(self, batch: dict[str, Any]) -> None:
        out_lines, err_lines = [], []
        for line in self.files[batch["input_file_id"]]["data"].decode().splitlines():
            if not line.strip():
                continue
            req = json.loads(line)
            user = _user_text(req["body"])
            fault = next((f for needle, f in self.batch_faults.items() if needle in user), "ok")
            if fault == "error":
                err_lines.append({"id": self._new_id("batch_req"), "custom_id": req["custom_id"], "response": None,
                                  "error": {"code": "server_error", "message": "scripted failure"}})
                continue
            out_lines.append({"id": self._new_id("batch_req"), "custom_id": req["custom_id"], "error": None,
                              "response": {"status_code": 200, "request_id": self._new_id("req"),
                                           "body": self.completion(req["body"], fault)}})
        batch["output_file_id"] = self._store_file("batch_output.jsonl", out_lines, "batch_output")
        batch["error_file_id"] = self._store_file("batch_errors.jsonl", err_lines, "batch_output") if err_lines else None
        batch["status"] = "completed"
        batch["request_counts"] = {"total": len(out_lines) + len(err_lines), "completed": len(out_lines),
                                   "failed": len(err_lines)}

    def _store_file(self, name: str, lines: list[dict], purpose: str) -> str:
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        file_id = self._new_id("file")
        self.files[file_id] = {"data": data, "object": _file_object(file_id, name, len(data), purpose)}
        return file_id


def _user_text(body: dict) -> str:
    return "\n".join(m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user")


def _file_object(file_id: str, name: str, size: int, purpose: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "bytes": size, "created_at": int(time.time()), "filename": name,
            "purpose": purpose, "status": "processed"}


class _Handler(BaseHTTPRequestHandler):
    server_owner: FakeOpenAI

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def _record(self, body: Any) -> None:
        owner = self.server_owner
        auth = self.headers.get("Authorization", "")
        entry = {"method": self.command, "path": self.path.split("?")[0], "time": time.monotonic(), "body": body,
                 "auth_ok": owner.expected_key is None or auth == f"Bearer {owner.expected_key}"}
        with owner._lock:
            owner.log.append(entry)

    def _refuse_bad_key(self) -> bool:
        """401 for a wrong key, echoing it as some servers do (the judge must scrub it from its errors)."""
        owner, auth = self.server_owner, self.headers.get("Authorization", "")
        if owner.expected_key is None or auth == f"Bearer {owner.expected_key}":
            return False
        self._send(401, {"error": {"message": f"Incorrect API key provided: {auth[len('Bearer '):]}",
                                   "type": "invalid_request_error", "code": "invalid_api_key"}})
        return True

    def do_POST(self) -> None:
        owner = self.server_owner
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?")[0]
        if self._refuse_bad_key():
            self._record(None)
            return
        if path.endswith("/files"):
            self._record({"multipart": len(raw)})
            return self._upload(raw)
        body = json.loads(raw or b"{}")
        self._record(body)
        if path.endswith("/chat/completions"):
            fault = owner._next_fault(_user_text(body))
            if fault == "429":
                return self._send(429, {"error": {"message": "Rate limit reached", "type": "requests"}},
                                  {"retry-after": str(owner.retry_after)})
            if fault == "500":
                return self._send(500, {"error": {"message": "The server had an error", "type": "server_error"}})
            if fault == "hang":
                time.sleep(owner.hang_seconds)
            return self._send(200, owner.completion(body, fault))
        if path.endswith("/batches"):
            batch = {"id": owner._new_id("batch"), "object": "batch", "endpoint": body["endpoint"],
                     "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                     "status": "validating", "created_at": int(time.time()), "metadata": body.get("metadata"),
                     "request_counts": {"total": 0, "completed": 0, "failed": 0}, "_polls": 0}
            owner.batches[batch["id"]] = batch
            return self._send(200, _public(batch))
        self._send(404, {"error": {"message": f"no route {path}"}})

    def _upload(self, raw: bytes) -> None:
        owner = self.server_owner
        message = BytesParser(policy=default_policy).parsebytes(
            b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
        fields = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
        data = fields["file"].get_payload(decode=True)
        purpose = fields["purpose"].get_content().strip()
        file_id = owner._new_id("file")
        obj = _file_object(file_id, fields["file"].get_filename() or "upload.jsonl", len(data), purpose)
        owner.files[file_id] = {"data": data, "object": obj}
        self._send(200, obj)

    def do_GET(self) -> None:
        owner = self.server_owner
        path = self.path.split("?")[0]
        self._record(None)
        if self._refuse_bad_key():
            return
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[1] == "batches" and parts[2] in owner.batches:
            batch = owner.batches[parts[2]]
            with owner._lock:
                batch["_polls"] += 1
                if batch["status"] == "validating":
                    batch["status"] = "in_progress"
                if batch["status"] == "in_progress" and batch["_polls"] >= owner.batch_polls_before_done:
                    owner._finish_batch(batch)
            return self._send(200, _public(batch))
        if len(parts) == 4 and parts[1] == "files" and parts[3] == "content" and parts[2] in owner.files:
            return self._send(200, None, raw=owner.files[parts[2]]["data"])
        self._send(404, {"error": {"message": f"no route {path}"}})


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}
