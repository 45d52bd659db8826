"""The `openai` backend against a real local HTTP server (127.0.0.1) that checks each request and injects
429, 500, slow and malformed replies. `FakeChatServer` is reused by the resume test."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lmmreg.config import ConfigError
from lmmreg.describe.backends import build_describer
from lmmreg.describe.base import BackendError, DescribeItem
from lmmreg.stages import describe as stage
from tests.test_describe_stage import make_dataset, make_params, read_jsonl

SECRET = "sk-test-0123456789-secret"


class FakeChatServer:
    """Speaks `POST /v1/chat/completions`. `faults[sha256]` is a list of what to do on the image's 1st,
    2nd, ... request: "429", "500", "slow", "malformed", "empty", "400", "401"; then it answers normally
    with a numbered list that names the image's sha256 (so the client cannot mix answers up)."""

    def __init__(self, *, model="tiny-vlm", key=None, delay=0.0, slow_s=1.0, n_items=10):
        self.model, self.key, self.delay, self.slow_s, self.n_items = model, key, delay, slow_s, n_items
        self.faults: dict[str, list[str]] = {}
        self.requests: list[dict] = []
        self.problems: list[str] = []  # protocol violations seen by the server; tests assert it is empty
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real servers

            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, payload, headers = server.handle(self.path, dict(self.headers), body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up: expected for "slow"

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def check(self, ok: bool, msg: str) -> None:
        if not ok:
            with self.lock:
                self.problems.append(msg)

    def handle(self, path: str, headers: dict, body: bytes):
        self.check(path == "/v1/chat/completions", f"path {path}")
        if self.key is not None:
            self.check(headers.get("Authorization") == f"Bearer {self.key}", "missing/wrong Authorization")
        req = json.loads(body)
        self.check(req.get("model") == self.model, f"model {req.get('model')}")
        (msg,) = req["messages"]
        text = [p for p in msg["content"] if p["type"] == "text"]
        images = [p for p in msg["content"] if p["type"] == "image_url"]
        self.check(msg["role"] == "user" and len(text) == 1 and len(images) == 1, f"content {msg['content']!r:.200}")
        url = images[0]["image_url"]["url"]
        self.check(url.startswith("data:image/png;base64,"), f"data URL {url[:40]}")
        sha = hashlib.sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest()
        for k in ("max_tokens", "temperature", "top_p", "seed"):
            self.check(k in req, f"no {k}")
        with self.lock:
            self.requests.append({**req, "sha256": sha, "messages": None, "prompt": text[0]["text"]})
            todo = self.faults.get(sha, [])
            fault = todo.pop(0) if todo else None
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.slow_s if fault == "slow" else self.delay)
            if fault in ("429", "500", "400", "401"):
                return int(fault), {"error": {"message": f"injected {fault}"}}, ({"Retry-After": "0"}
                                                                                 if fault == "429" else {})
            if fault == "malformed":
                return 200, b'{"choices": [{"mess', {}
            content = "" if fault == "empty" else "Here you go:\n" + "\n".join(
                f"{i}. Image {sha[:8]} detail {i}." for i in range(1, self.n_items + 1))
            return 200, {"id": "x", "object": "chat.completion", "model": self.model,
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140}}, {}
        finally:
            with self.lock:
                self.in_flight -= 1


def openai_options(server: FakeChatServer, **kw) -> dict:
    return {"base_url": server.url, "concurrency": 4, "timeout_s": 0.5, "max_retries": 3, "retry_base_s": 0.01,
            "retry_max_wait_s": 0.05, **kw}


def test_stage_with_faults_retries_and_tokens(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LMMREG_TEST_KEY", SECRET)
    with FakeChatServer(key=SECRET) as server:
        params, paths = make_dataset(tmp_path, backend="openai", model="tiny-vlm",
                                     options=openai_options(server, api_key_env="LMMREG_TEST_KEY"))
        from lmmreg.data.manifest import load_manifest

        records, _ = load_manifest(paths["manifest"])
        shas = [r.sha256 for r in records]
        server.faults = {shas[0]: ["429", "429"], shas[1]: ["500"], shas[2]: ["slow"], shas[3]: ["malformed"]}
        with caplog.at_level(logging.DEBUG):
            summary = stage.main(params, **paths)
    assert server.problems == []
    assert summary["described"] == 10 and summary["errors"] == 0
    assert summary["descriptions_per_image"] == {10: 10}
    assert summary["prompt_tokens"] == 1000 and summary["completion_tokens"] == 400
    by_sha = {r["sha256"]: r["descriptions"] for r in read_jsonl(paths["out"])}
    assert all(d[0] == f"Image {sha[:8]} detail 1." for sha, d in by_sha.items())  # no answers mixed up
    calls = {sha: sum(r["sha256"] == sha for r in server.requests) for sha in shas}
    assert calls[shas[0]] == 3 and calls[shas[1]] == 2 and calls[shas[2]] == 2 and calls[shas[3]] == 2
    assert {r["prompt"] for r in server.requests} == {params.describe.prompt}
    assert 1 < server.max_in_flight <= 4  # concurrent, and bounded
    # The key went in the header only: not in logs, the store, the outputs.
    assert SECRET not in caplog.text
    for f in paths["store"].parent.iterdir():
        assert SECRET not in f.read_text()


def test_errors_become_records_and_fatal_status_stops(tmp_path):
    with FakeChatServer() as server:
        params, paths = make_dataset(tmp_path, backend="openai", model="tiny-vlm",
                                     options=openai_options(server, max_retries=1))
        from lmmreg.data.manifest import load_manifest

        shas = [r.sha256 for r in load_manifest(paths["manifest"])[0]]
        server.faults = {shas[0]: ["500", "500"], shas[1]: ["empty"], shas[2]: ["400"]}
        with pytest.raises(ValueError, match="3 image") as err:
            stage.main(params, **paths)
        assert "gave up after 2 attempts: HTTP 500" in str(err.value)
        assert "empty answer" in str(err.value) and "HTTP 400" in str(err.value)
        before = len(server.requests)
        stage.main(params, **paths)  # the re-run asks again for the three failed images only
        assert len(server.requests) - before == 3

        server.faults = {shas[0]: ["401"]}
        describer = build_describer(params.describe, raw_root=paths["raw"])
        item = DescribeItem("x", Path(paths["raw"]) / load_manifest(paths["manifest"])[0][0].path, shas[0])
        with pytest.raises(BackendError, match="HTTP 401"):
            describer.describe_batch([item])
    assert server.problems == []


def test_connection_refused_is_retried_then_an_error(tmp_path):
    with FakeChatServer() as server:
        url = server.url
    params, paths = make_dataset(tmp_path, backend="openai", model="m",
                                 options={"base_url": url, "max_retries": 2, "retry_base_s": 0.0})
    describer = build_describer(params.describe, raw_root=paths["raw"])
    (ans,) = describer.describe_batch([DescribeItem("a", next(Path(paths["raw"]).rglob("*.png")), "0" * 64)])
    assert ans.error.startswith("gave up after 3 attempts: ConnectError")


@pytest.mark.parametrize("options, match", [
    ({}, "describe.options.base_url: required"),
    ({"base_url": "http://127.0.0.1:1/v1", "concurrency": 0}, "describe.options.concurrency: invalid"),
    ({"base_url": "http://127.0.0.1:1/v1", "concurency": 4}, "describe.options.concurency: unknown"),
    ({"base_url": "http://127.0.0.1:1/v1", "api_key_env": "LMMREG_SURELY_UNSET"}, "LMMREG_SURELY_UNSET is not set"),
])
def test_bad_options_name_the_key(options, match):
    params = make_params(backend="openai", model="m", options=options)
    with pytest.raises(ConfigError, match=match):
        build_describer(params.describe, raw_root=Path("."))


def test_key_not_in_setting_hash_and_server_address_does_not_re_describe():
    from lmmreg.describe.setting import setting_hash

    a = make_params(backend="openai", model="m", options={"base_url": "http://127.0.0.1:1/v1", "api_key_env": "A"})
    b = make_params(backend="openai", model="m", options={"base_url": "http://127.0.0.1:2/v1", "api_key_env": "B",
                                                            "concurrency": 64})
    c = make_params(backend="openai", model="m", options={"base_url": "http://127.0.0.1:1/v1", "extra_body": {"x": 1}})
    assert setting_hash(a.describe) == setting_hash(b.describe) != setting_hash(c.describe)


def test_stopping_early_abandons_requests_in_flight(tmp_path):
    with FakeChatServer(slow_s=30.0) as server:
        params, paths = make_dataset(tmp_path, backend="openai", model="tiny-vlm",
                                     options=openai_options(server, timeout_s=60.0, concurrency=2))
        describer = build_describer(params.describe, raw_root=paths["raw"])
        images = sorted(Path(paths["raw"]).rglob("*.png"))
        items = [DescribeItem(p.name, p, hashlib.sha256(p.read_bytes()).hexdigest()) for p in images[:2]]
        server.faults = {items[1].sha256: ["slow"]}
        answers = describer.describe_iter(items)
        first_item, first = next(answers)  # the fast one
        assert first.error is None and first_item.path == images[0]
        t0 = time.monotonic()
        answers.close()  # e.g. Ctrl-C in the stage: must not wait 30 s for the slow request
        assert time.monotonic() - t0 < 5
