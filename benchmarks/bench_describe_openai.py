"""The `openai` describe backend's own overhead: requests/s against a local server that answers instantly.

    PYTHONPATH=src python benchmarks/bench_describe_openai.py [--requests 2000] [--max-seconds 30]
    # the same against a real server, e.g. `vllm serve Qwen/Qwen2.5-VL-7B-Instruct`:
    PYTHONPATH=src python benchmarks/bench_describe_openai.py --base-url http://127.0.0.1:8000/v1 \
        --model Qwen/Qwen2.5-VL-7B-Instruct --image some.jpg --requests 256 --concurrency 1 8 64

The server (a minimal HTTP/1.1 keep-alive responder on 127.0.0.1, in its own process) returns a fixed
10-item answer without looking at the image, so the figures are the ceiling the client itself imposes:
building the request (base64 of the image), HTTP, JSON, parsing the reply, at concurrency 1, 8 and 64.
A real VLM server is slower by orders of magnitude (see docs/describe.md). Writes
reports/bench_describe_openai.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing as mp
import os
import platform
import socket
import time
from pathlib import Path

ANSWER = json.dumps({
    "id": "bench", "object": "chat.completion", "model": "bench",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "\n".join(f"{i}. A description number {i}." for i in range(1, 11))}}],
    "usage": {"prompt_tokens": 600, "completion_tokens": 90, "total_tokens": 690},
}).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER)


async def _serve_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _run_server(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_serve_client, sock=sock, backlog=512)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _tiny_png(path: Path) -> Path:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (224, 224), (200, 30, 30)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


def bench(concurrency: int, n_requests: int, max_seconds: float, url: str, image: Path, *, model: str = "bench",
          api_key_env: str | None = None) -> dict:
    from lmmreg.config import DescribeConfig
    from lmmreg.describe.base import DescribeItem
    from lmmreg.describe.openai_chat import OpenAIChatDescriber

    options = {"base_url": url, "concurrency": concurrency, "timeout_s": 300.0, "max_retries": 0}
    if api_key_env:
        options["api_key_env"] = api_key_env
    cfg = DescribeConfig(backend="openai", model=model, options=options)
    describer = OpenAIChatDescriber(cfg)
    items = [DescribeItem(f"img{i}", image, f"{i:064x}") for i in range(n_requests)]
    done = errors = 0
    t0 = time.perf_counter()
    answers = describer.describe_iter(items)
    for _, ans in answers:
        done += 1
        errors += ans.error is not None
        if time.perf_counter() - t0 > max_seconds:
            answers.close()  # bounded in time as well as in count
            break
    seconds = time.perf_counter() - t0
    return {"concurrency": concurrency, "requests": done, "errors": errors, "seconds": round(seconds, 3),
            "requests_per_s": round(done / seconds, 1), "ms_per_request": round(1000 * seconds / done, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    p.add_argument("--max-seconds", type=float, default=30.0, help="time cap per concurrency level")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--out", type=Path, default=Path("reports/bench_describe_openai"))
    p.add_argument("--base-url", help="measure a real server (e.g. vLLM) instead of the local instant one")
    p.add_argument("--model", default="bench", help="served model name (with --base-url)")
    p.add_argument("--image", type=Path, help="image sent with every request (with --base-url; default a 224px PNG)")
    p.add_argument("--api-key-env", help="env var holding the API key (with --base-url)")
    args = p.parse_args()
    if args.base_url:
        run_against_server(args)
        return

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server = mp.get_context("fork").Process(target=_run_server, args=(sock,), daemon=True)
    server.start()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image = _tiny_png(args.out.parent / ".bench_image.png")
    image_bytes = image.stat().st_size
    try:
        bench(1, 20, 5.0, url, image)  # warm-up: imports, first connection
        rows = [bench(c, args.requests, args.max_seconds, url, image) for c in args.concurrency]
    finally:
        server.terminate()
        server.join()
        image.unlink(missing_ok=True)
    result = {"what": "openai backend overhead vs a local instant server (127.0.0.1)",
              "image_bytes": image_bytes, "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "machine": platform.machine(), "rows": rows}
    table = ["| concurrency | requests | errors | seconds | requests/s | ms/request |", "|---|---|---|---|---|---|"]
    table += [f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['seconds']} | {r['requests_per_s']} "
              f"| {r['ms_per_request']} |" for r in rows]
    text = (f"# openai describe backend: client overhead\n\n{result['what']}; {result['cpu_count']} CPU cores, "
            f"Python {result['python']}, {result['image_bytes']}-byte PNG per request.\n"
            f"Command: `PYTHONPATH=src python benchmarks/bench_describe_openai.py`\n\n" + "\n".join(table) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(text)
    print(text)


def run_against_server(args: argparse.Namespace) -> None:
    """End-to-end images/s through a real server: the same client, the same requests, a real model."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image = args.image or _tiny_png(args.out.parent / ".bench_image.png")
    rows = [bench(c, args.requests, args.max_seconds, args.base_url, image, model=args.model,
                  api_key_env=args.api_key_env) for c in args.concurrency]
    table = ["| concurrency | requests | errors | seconds | images/s | s/image |", "|---|---|---|---|---|---|"]
    table += [f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['seconds']} | {r['requests_per_s']} "
              f"| {r['ms_per_request'] / 1000:.3f} |" for r in rows]
    text = f"# openai describe backend against {args.base_url} ({args.model})\n\n" + "\n".join(table) + "\n"
    out = args.out.with_name(args.out.name + "_server")
    out.with_suffix(".json").write_text(json.dumps({"base_url": args.base_url, "model": args.model, "rows": rows},
                                                   indent=1) + "\n")
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
