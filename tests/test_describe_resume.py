"""Resume: a describe process killed mid-run (SIGKILL), restarted, ends with every image described exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from lmmreg.data.manifest import load_manifest
from tests.test_describe_openai import FakeChatServer, openai_options
from tests.test_describe_stage import ROOT, make_dataset, read_jsonl


def stage_cmd(params_file: Path, paths: dict) -> list[str]:
    return [sys.executable, "-m", "lmmreg.stages.describe", "--params", str(params_file), "--dataset", "demo",
            "--raw", str(paths["raw"]), "--manifest", str(paths["manifest"]), "--store", str(paths["store"]),
            "--out", str(paths["out"])]


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_killed_run_resumes_without_redoing_work(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with FakeChatServer(delay=0.15) as server:
        options = openai_options(server, concurrency=2, timeout_s=5.0)
        _, paths = make_dataset(tmp_path, backend="openai", model="tiny-vlm", options=options)
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        raw["demo"].update(n_classes=2, train_per_class=3, test_per_class=2, image_size=32)
        raw["describe"].update(backend="openai", model="tiny-vlm", options=options)
        params_file = tmp_path / "params.yaml"
        params_file.write_text(yaml.safe_dump(raw))

        proc = subprocess.Popen(stage_cmd(params_file, paths), env=env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while count_lines(paths["store"]) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        stored_before = {r["sha256"] for r in read_jsonl(paths["store"])}
        assert 3 <= len(stored_before) < 10  # killed mid-run
        requests_before = len(server.requests)

        done = subprocess.run(stage_cmd(params_file, paths), env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()[-2000:]

    assert server.problems == []
    records = read_jsonl(paths["store"])
    shas = {r.sha256 for r in load_manifest(paths["manifest"])[0]}
    assert Counter(r["sha256"] for r in records) == dict.fromkeys(shas, 1)  # each image exactly once
    assert all(not r["error"] and len(r["descriptions"]) == 10 for r in records)
    asked_after = Counter(r["sha256"] for r in server.requests[requests_before:])
    assert not stored_before & set(asked_after)  # nothing stored before the kill was asked again
    assert set(asked_after) == shas - stored_before
    assert len(read_jsonl(paths["out"])) == 10
