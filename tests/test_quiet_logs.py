"""The describe stage, run as DVC runs it (a process of its own, stderr to a pipe), with the `openai` backend
against the local fake server: no per-request log line by default, its own progress line with requests/s, retries
and errors; `LMMREG_LOG_REQUESTS=1` brings one line per request back, for debugging a server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from lmmreg.data.demo import generate_demo
from lmmreg.data.manifest import load_manifest
from lmmreg.stages import prepare
from tests.conftest import REPO
from tests.test_describe_openai import FakeChatServer, openai_options
from tests.test_describe_stage import make_params

REQUEST_LINE = re.compile(r"HTTP Request: POST \S+/chat/completions")


def describe_stage(tmp_path: Path, server: FakeChatServer, run: str, **env: str) -> str:
    """Run `python -m lmmreg.stages.describe` on the 10-image demo dataset of `tmp_path`; returns its stderr."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["demo"].update(n_classes=2, train_per_class=3, test_per_class=2, image_size=32)
    raw["describe"].update(backend="openai", model="tiny-vlm", options=openai_options(server))
    params_file = tmp_path / f"params-{run}.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / run / "descriptions.jsonl"
    cmd = [sys.executable, "-m", "lmmreg.stages.describe", "--params", str(params_file), "--dataset", "demo",
           "--raw", str(tmp_path / "raw"), "--manifest", str(tmp_path / "prepared"),
           "--store", str(out.with_name("store.jsonl")), "--out", str(out)]
    clean = {k: v for k, v in os.environ.items() if k != "LMMREG_LOG_REQUESTS"}
    done = subprocess.run(cmd, cwd=tmp_path, env={**clean, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_no_request_lines_by_default_and_a_switch_to_see_them(tmp_path):
    params = make_params()
    generate_demo(params.demo, tmp_path / "raw")
    prepare.main(params, dataset="demo", raw=tmp_path / "raw", out=tmp_path / "prepared")
    shas = [r.sha256 for r in load_manifest(tmp_path / "prepared")[0]]
    with FakeChatServer() as server:
        server.faults = {shas[0]: ["429"], shas[1]: ["500"]}  # two requests are retried once each
        quiet = describe_stage(tmp_path, server, "quiet")
        sent = len(server.requests)
        loud = describe_stage(tmp_path, server, "loud", LMMREG_LOG_REQUESTS="1")
        sent_loud = len(server.requests) - sent
    assert server.problems == []
    assert sent == 12 and sent_loud == 10  # 10 images, 2 retries; then the same images again into a new store
    assert len(REQUEST_LINE.findall(quiet)) == 0, quiet[-3000:]
    # The stage's own progress line says what the request lines said, in one line.
    done = [ln for ln in quiet.splitlines() if "describe demo: done, 10/10 img" in ln]
    assert len(done) == 1 and re.search(r"requests=12 \(\d+(\.\d+)?/s\) retries=2 errors=0$", done[0]), quiet[-3000:]
    assert len(REQUEST_LINE.findall(loud)) == sent_loud, loud[-3000:]
