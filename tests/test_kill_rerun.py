"""SIGKILL a long stage at a random point of its work, run it again: the result equals an uninterrupted run's.

Covers pretrain_clip (resumes from its saved state), describe (resumes from its store) and features (starts over;
its output is written atomically), each run as dvc.yaml runs it (`python -m lmmreg.stages.<stage> ...`) on small
params. The kill point is random (seed printed; LMMREG_KILL_SEED replays one) within the stage's real work: after
its first resume state is saved, after some answers are stored, after the model is built.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from lmmreg.config import parse_params
from lmmreg.data.demo import generate_demo
from lmmreg.stages import prepare
from tests.conftest import REPO, small_raw_params
from tests.test_describe_openai import FakeChatServer, openai_options

pytestmark = pytest.mark.slow


def kill_rng() -> random.Random:
    seed = int(os.environ.get("LMMREG_KILL_SEED", time.time_ns() % 2**32))
    print(f"\nkill seed {seed} (LMMREG_KILL_SEED={seed} replays it)")
    return random.Random(seed)


def stage_env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    return {**env, "PYTHONPATH": str(REPO / "src"), "DVC_ROOT": str(root)}


def run_to_end(cmd: list[str], root: Path, log: Path) -> None:
    with log.open("a") as out:
        done = subprocess.run(cmd, cwd=root, env=stage_env(root), stdout=out, stderr=subprocess.STDOUT, timeout=900)
    assert done.returncode == 0, log.read_text()[-3000:]


def run_and_kill(cmd: list[str], root: Path, log: Path, *, started: Callable[[], bool], delay: float) -> None:
    """Start the stage, wait until `started()`, then `delay` seconds more, then SIGKILL it; it must not have ended."""
    with log.open("a") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=stage_env(root), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while not started():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.02)
        time.sleep(delay)
        assert proc.poll() is None, f"the stage ended before the kill ({delay:.2f}s): {log.read_text()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    print(f"killed {delay:.3f} s after the start condition")


def write_params(root: Path, raw: dict) -> Path:
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root / "params.yaml"


def prepared_root(root: Path, raw: dict, params) -> Path:
    """A project folder holding `raw` as params.yaml, the demo images and their prepared manifest."""
    root.mkdir()
    write_params(root, raw)
    generate_demo(params.demo, root / "data/raw/demo")
    prepare.main(params, dataset="demo", raw=root / "data/raw/demo", out=root / "data/prepared/demo")
    return root


def test_pretrain_clip(tmp_path):
    rng = kill_rng()
    raw = small_raw_params()
    raw["demo"]["image_size"] = 64  # the tiny CLIP's input size
    raw["pretrain"].update(enabled=True, n_images=1024, heldout_images=20, steps=260, batch_size=16, threads=1)
    runs = {}
    for name in ("whole", "killed"):
        root = tmp_path / name
        root.mkdir()
        raw["clip"]["pretrained"] = "models/clip_pretrain/checkpoint.pt"
        write_params(root, raw)
        generate_demo(parse_params(raw).demo, root / "data/raw/demo")
        cmd = [sys.executable, "-m", "lmmreg.stages.pretrain_clip", "--demo-raw", "data/raw/demo", "--out",
               "models/clip_pretrain", "--metrics", "metrics/pretrain.json", "--resume-dir", "data/cache/pretrain",
               "--workers", "0"]
        log = root / "stage.log"
        if name == "killed":  # after the state of step 100 is saved, somewhere in steps 100-260
            state = root / "data/cache/pretrain"
            run_and_kill(cmd, root, log, started=lambda s=state: any(s.glob("*.pt")), delay=rng.uniform(0, 1.5))
            assert not (root / "models/clip_pretrain/checkpoint.pt").exists()
        run_to_end(cmd, root, log)
        runs[name] = root
    assert "resuming pretraining at step 100" in (runs["killed"] / "stage.log").read_text()
    a, b = (torch.load(r / "models/clip_pretrain/checkpoint.pt", weights_only=True) for r in runs.values())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((r / "metrics/pretrain.json").read_text()) for r in runs.values())
    for key in ("final_loss", "trained", "random_init"):
        assert ma[key] == mb[key]
    assert not any((runs["killed"] / "data/cache/pretrain").glob("*.pt"))  # the resume state is gone


def test_describe(tmp_path):
    rng = kill_rng()
    with FakeChatServer(delay=0.2) as server:
        raw = small_raw_params()
        raw["describe"].update(backend="openai", model="tiny-vlm",
                               options=openai_options(server, concurrency=2, timeout_s=5.0))
        params = parse_params(raw)
        outs = {}
        for name in ("whole", "killed"):
            root = prepared_root(tmp_path / name, raw, params)
            store, out = root / "data/descriptions/demo/store.jsonl", root / "data/descriptions/demo/descriptions.jsonl"
            cmd = [sys.executable, "-m", "lmmreg.stages.describe", "--dataset", "demo", "--raw", "data/raw/demo",
                   "--manifest", "data/prepared/demo", "--store", str(store), "--out", str(out)]
            if name == "killed":
                n = rng.randint(1, 30)  # of 36 images

                def stored(n=n, store=store) -> bool:
                    return store.exists() and store.read_bytes().count(b"\n") >= n

                print(f"killing once {n} answers are stored")
                run_and_kill(cmd, root, root / "stage.log", started=stored, delay=0)
                assert not out.exists()
            run_to_end(cmd, root, root / "stage.log")
            outs[name] = (out.read_bytes(), json.loads((out.parent / "summary.json").read_text()))
    (a, sa), (b, sb) = outs.values()
    assert a == b and len(a.splitlines()) == 36
    for key in ("images", "described", "errors", "descriptions_per_image", "prompt_tokens", "completion_tokens"):
        assert sa[key] == sb[key]
    assert server.problems == []


def test_features(tmp_path):
    rng = kill_rng()
    raw = small_raw_params()
    raw["demo"].update(n_classes=4, train_per_class=60, test_per_class=20, image_size=64)
    raw["clip"]["augment_views"] = 2  # the seeded augmentation path too
    params = parse_params(raw)
    feats = {}
    for name in ("whole", "killed"):
        root = prepared_root(tmp_path / name, raw, params)
        out = root / "data/features/demo.pt"
        cmd = [sys.executable, "-m", "lmmreg.stages.features", "--raw", "data/raw/demo", "--manifest",
               "data/prepared/demo", "--out", "data/features/demo.pt", "--device", "cpu", "--batch-size", "4",
               "--workers", "0"]
        log = root / "stage.log"
        if name == "killed":  # the model is built (logged), the encoding of 320 + 480 views is under way
            built = "CLIP lmmreg-tiny-quickgelu weights"
            run_and_kill(cmd, root, log, started=lambda log=log, built=built: built in log.read_text(),
                         delay=rng.uniform(0, 1.0))
            assert not out.exists()  # nothing half-written under the real name
        run_to_end(cmd, root, log)
        feats[name] = torch.load(out, weights_only=True)
    a, b = feats.values()
    init_a, init_b = a["meta"].pop("tail_init"), b["meta"].pop("tail_init")  # tensors: compared exactly below
    assert a["ids"] == b["ids"] and torch.equal(a["labels"], b["labels"]) and a["meta"] == b["meta"]
    assert torch.equal(init_a["proj"], init_b["proj"]) and init_a["logit_scale"] == init_b["logit_scale"]
    assert a["tensors"].keys() == b["tensors"].keys() == {"feat", "is_test", "aug", "has_aug"}
    assert all(torch.equal(a["tensors"][k], b["tensors"][k]) for k in a["tensors"])
