"""`openai` backend: any OpenAI-compatible chat-completions server (vLLM, SGLang, Ollama, llama.cpp, hosted APIs).

Each image goes as a base64 data URL content part next to the prompt. Requests run concurrently
(`options.concurrency` in flight, on one asyncio loop in a worker thread) and answers are handed back
the moment each completes, so the store records them as they arrive. 429, 5xx, timeouts, dropped
connections and malformed replies are retried with exponential backoff and jitter (honouring
`Retry-After`); after `max_retries` the image becomes an error record that the next run retries. 401,
403 and 404 mean the address, model or key is wrong for every image: the stage stops at once.

A circuit breaker stops the stage when no server is there: `max_connect_failures` connection attempts in a
row (over all images) that never reached a server (refused, DNS, TLS, connect timeout) raise
:class:`ServerUnreachableError`, naming `base_url`, the last error and the command that starts a server,
within seconds instead of grinding every image through its retries. Answers already stored stay stored.
Any reply from the server (even 429 or 5xx) closes the count again; those keep the patient retry path.

The API key is read from the environment variable named by `options.api_key_env`; it is sent only in
the Authorization header, never logged, stored, hashed or sent to MLflow.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import mimetypes
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx

from lmmreg.config import ConfigError, DescribeConfig
from lmmreg.describe.base import Answer, BackendError, DescribeItem, check_options, item_seed, option
from lmmreg.preflight import MISSING, OK, WARN, Verdict

log = logging.getLogger(__name__)

KNOWN_OPTIONS = {"base_url", "api_key_env", "concurrency", "timeout_s", "max_retries", "retry_base_s",
                 "retry_max_wait_s", "send_repetition_penalty", "extra_body", "max_connect_failures"}
CONNECTIONS_PER_CLIENT = 4  # see _run: measured with benchmarks/bench_describe_openai.py
FATAL_STATUS = {401, 403, 404}  # wrong key, wrong model or wrong address: no image will do better
# Connecting is quick or it is not happening; a slow *answer* is the read timeout's business (timeout_s).
CONNECT_TIMEOUT_S = 10.0
CONNECT_RETRY_WAIT_S = 0.5  # between connection attempts that found no server: the breaker decides soon
PREFLIGHT_TIMEOUT_S = 60.0  # doctor's one real request: a cold server may take a while for its first answer


class ServerUnreachableError(BackendError):
    """No server answers at `base_url`: every image would fail the same way. `last`: the last connection error."""

    last: str = ""


def start_server_hint(base_url: str, model: str) -> str:
    """The command that starts an OpenAI-compatible server where `base_url` points."""
    url = httpx.URL(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    where = "" if url.host in ("127.0.0.1", "localhost", "0.0.0.0", "::1") else f" (on {url.host})"
    return f"`vllm serve {model or '<model>'} --port {port}`{where}, or any OpenAI-compatible server (docs/describe.md)"


def image_data_url(path: Path) -> str:
    """`data:<mime>;base64,...` of an image file, its bytes unchanged."""
    mime = mimetypes.guess_type(path.name)[0]
    if mime is None or not mime.startswith("image/"):
        from PIL import Image  # only for odd suffixes

        with Image.open(path) as im:
            mime = Image.MIME.get(im.format or "", "image/jpeg")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _message_text(content) -> str:
    """`message.content` is a string, or (some servers) a list of typed parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise TypeError(f"message.content is {type(content).__name__}")


class OpenAIChatDescriber:
    max_batch = 1024  # only used by describe_batch callers; describe_iter streams any number

    def __init__(self, cfg: DescribeConfig):
        check_options(cfg, KNOWN_OPTIONS)
        if not cfg.model:
            raise ConfigError("describe.model: the openai backend needs the served model name "
                              "(e.g. Qwen/Qwen2.5-VL-7B-Instruct for `vllm serve Qwen/Qwen2.5-VL-7B-Instruct`)")
        self.cfg = cfg
        self.base_url = option(cfg, "base_url", str, why="e.g. http://127.0.0.1:8000/v1").rstrip("/")
        self.concurrency = option(cfg, "concurrency", int, 16, check=lambda v: v >= 1, why="must be >= 1")
        self.timeout_s = option(cfg, "timeout_s", float, 300.0, check=lambda v: v > 0, why="must be > 0")
        self.max_retries = option(cfg, "max_retries", int, 6, check=lambda v: v >= 0, why="must be >= 0")
        self.retry_base_s = option(cfg, "retry_base_s", float, 1.0, check=lambda v: v >= 0, why="must be >= 0")
        self.retry_max_wait_s = option(cfg, "retry_max_wait_s", float, 60.0, check=lambda v: v >= 0)
        self.send_repetition_penalty = option(cfg, "send_repetition_penalty", bool, True)
        self.extra_body = option(cfg, "extra_body", dict, {})
        self.max_connect_failures = option(cfg, "max_connect_failures", int, 5, check=lambda v: v >= 1,
                                           why="must be >= 1")
        self._connect_failures = 0  # in a row, over all workers (one event loop: no lock needed)
        # Requests sent and how many of them repeated a failed one: the describe stage's progress line shows them.
        self.request_counts = {"requests": 0, "retries": 0}
        key_env = option(cfg, "api_key_env", str, "")
        self._api_key = ""
        if key_env:
            self._api_key = os.environ.get(key_env, "")
            if not self._api_key:
                raise ConfigError(f"describe.options.api_key_env: environment variable {key_env} is not set or empty")

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def build_payload(self, item: DescribeItem, data_url: str) -> dict:
        cfg = self.cfg
        body = {
            "model": cfg.model,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": cfg.prompt},
                {"type": "image_url", "image_url": {"url": data_url}},
            ]}],
            "max_tokens": cfg.max_new_tokens,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "seed": item_seed(cfg.seed, item.sha256, item.attempt),
        }
        if self.send_repetition_penalty:
            body["repetition_penalty"] = cfg.repetition_penalty  # vLLM/SGLang extension; hosted APIs reject it
        return {**body, **self.extra_body}

    def _client(self, connections: int) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, CONNECT_TIMEOUT_S))
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout, limits=limits)

    def _no_server(self, problem: str) -> None:
        """Count a connection attempt that reached no server; trip the breaker at `max_connect_failures`."""
        self._connect_failures += 1
        if self._connect_failures >= self.max_connect_failures:
            err = ServerUnreachableError(
                f"describe.options.base_url {self.base_url}: no server answers ({self._connect_failures} connection "
                f"attempts in a row failed; last: {problem}). Start one, e.g. "
                f"{start_server_hint(self.base_url, self.cfg.model)}, or fix describe.options.base_url; "
                "answers already stored are kept and the next run continues from them")
            err.last = problem
            raise err

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.retry_max_wait_s)
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        # Full jitter keeps many clients that failed together from retrying together.
        return min(self.retry_max_wait_s, self.retry_base_s * 2 ** attempt) * (0.5 + random.random() / 2)

    async def describe_one(self, client: httpx.AsyncClient, item: DescribeItem) -> Answer:
        try:
            payload = self.build_payload(item, image_data_url(item.path))
        except OSError as e:
            return Answer(raw="", error=f"{item.path}: cannot read image ({e})")
        problem = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            no_server = False
            self.request_counts["requests"] += 1
            self.request_counts["retries"] += attempt > 0
            try:
                resp = await client.post("/chat/completions", json=payload)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:  # refused, DNS, TLS: no server reached
                problem = f"{type(e).__name__}: {e}"
                no_server = True
                self._no_server(problem)
            except httpx.TransportError as e:  # read timeouts, dropped connections: a server was there
                problem = f"{type(e).__name__}: {e}"
                self._connect_failures = 0
            else:
                self._connect_failures = 0
                if resp.status_code == 200:
                    try:
                        data = resp.json()
                        choice = data["choices"][0]
                        usage = data.get("usage") or {}
                        return Answer(raw=_message_text(choice["message"].get("content")),
                                      truncated=choice.get("finish_reason") == "length",
                                      prompt_tokens=usage.get("prompt_tokens"),
                                      completion_tokens=usage.get("completion_tokens"),
                                      extra={"finish_reason": choice.get("finish_reason")})
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
                        problem = f"malformed reply ({type(e).__name__}: {e}): {resp.text[:200]!r}"
                else:
                    problem = f"HTTP {resp.status_code}: {self._redact(resp.text[:300])}"
                    if resp.status_code in FATAL_STATUS:
                        raise BackendError(f"{self.base_url}/chat/completions, model {self.cfg.model!r}: {problem} "
                                           "(check describe.options.base_url, describe.model and the API key)")
                    if resp.status_code != 429 and resp.status_code < 500 and resp.status_code != 408:
                        return Answer(raw="", error=problem)  # this image's request is bad; retrying won't help
                    retry_after = resp.headers.get("retry-after")
            if attempt < self.max_retries:
                wait = min(self._backoff(attempt, retry_after), CONNECT_RETRY_WAIT_S) if no_server else \
                    self._backoff(attempt, retry_after)
                log.debug("%s: %s; retry %d/%d in %.2fs", item.image_id, problem, attempt + 1, self.max_retries, wait)
                await asyncio.sleep(wait)
        return Answer(raw="", error=f"gave up after {self.max_retries + 1} attempts: {problem}")

    async def _run(self, items: list[DescribeItem], out: queue.Queue, stop: threading.Event,
                   running: dict) -> None:
        todo = iter(items)  # shared by the workers; safe on one event loop

        async def worker(client: httpx.AsyncClient) -> None:
            for item in todo:
                if stop.is_set():
                    return
                out.put((item, await self.describe_one(client, item)))

        n_workers = min(self.concurrency, len(items))
        # httpx's connection pool slows down sharply as it grows, so workers share small clients
        # (benchmarks/bench_describe_openai.py measures the overhead: reports/bench_describe_openai.md).
        per = CONNECTIONS_PER_CLIENT
        clients = [self._client(min(per, n_workers)) for _ in range(-(-n_workers // per))]
        async with contextlib.AsyncExitStack() as stack:
            for c in clients:
                await stack.enter_async_context(c)
            workers = [asyncio.create_task(worker(clients[i % len(clients)])) for i in range(n_workers)]
            running.update(loop=asyncio.get_running_loop(), workers=workers)
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()

    def describe_iter(self, items: Iterable[DescribeItem]) -> Iterator[tuple[DescribeItem, Answer]]:
        items = list(items)
        if not items:
            return
        out: queue.Queue = queue.Queue()
        stop = threading.Event()
        running: dict = {}  # the worker thread's loop and tasks, to cancel them from this thread
        done = object()

        def run() -> None:
            try:
                asyncio.run(self._run(items, out, stop, running))
            except BaseException as e:  # handed to the consumer thread, which re-raises it
                out.put(e)
            finally:
                out.put(done)

        thread = threading.Thread(target=run, name="openai-describer", daemon=True)
        thread.start()
        try:
            while (got := out.get()) is not done:
                if isinstance(got, BaseException):
                    raise got
                yield got
        finally:
            # The consumer stopped early (error, Ctrl-C): abandon the requests in flight rather than wait
            # up to timeout_s for them; their images were never stored, so the next run asks again.
            stop.set()
            loop = running.get("loop")
            if thread.is_alive() and loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(lambda: [w.cancel() for w in running["workers"]])
            thread.join(timeout=10)

    def describe_batch(self, items: list[DescribeItem]) -> list[Answer]:
        got = {id(item): ans for item, ans in self.describe_iter(items)}
        return [got[id(item)] for item in items]


def preflight(cfg: DescribeConfig, *, root: Path, sample_image: Callable[[], Path]) -> Verdict:
    """One real request with one real image, answered and parsed, as the describe stage will send it."""
    from lmmreg.data.manifest import sha256_file
    from lmmreg.describe.parse import parse_answer

    probe_cfg = dataclasses.replace(cfg, options={**cfg.options, "max_retries": 0, "max_connect_failures": 1,
                                                  "concurrency": 1,
                                                  "timeout_s": min(float(cfg.options.get("timeout_s", 300.0)),
                                                                   PREFLIGHT_TIMEOUT_S)})
    describer = OpenAIChatDescriber(probe_cfg)
    image = sample_image()
    hint = start_server_hint(describer.base_url, cfg.model)
    t0 = time.perf_counter()
    try:
        (ans,) = describer.describe_batch([DescribeItem("doctor", image, sha256_file(image))])
    except ServerUnreachableError as e:
        return MISSING, f"no server at {describer.base_url} ({e.last})", f"start it: {hint}"
    except BackendError as e:
        return MISSING, str(e), "check describe.options.base_url, describe.model and the API key"
    took = time.perf_counter() - t0
    if ans.error:
        return MISSING, f"{describer.base_url} answered with an error: {ans.error}", f"check the server's log; {hint}"
    parsed = parse_answer(ans.raw, cfg.n_descriptions, truncated=bool(ans.truncated))
    detail = (f"{describer.base_url} answered in {took:.1f} s for {image.name}: {len(parsed.descriptions)} of "
              f"{cfg.n_descriptions} descriptions parsed")
    if not parsed.descriptions:
        return MISSING, detail + f" (raw: {ans.raw[:80]!r})", "the model answered no list: check describe.model"
    if len(parsed.descriptions) < cfg.n_descriptions:
        return WARN, detail, "fewer descriptions than asked: see describe.on_too_few"
    return OK, detail, ""
