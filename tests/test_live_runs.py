"""MLflow runs are live: a real train stage (a subprocess, as DVC runs it) against the SQLite store, watched from
this process while it trains. Its run is RUNNING while epochs arrive, the epochs carry increasing timestamps, the
run's duration is its training time, and accuracies are exact fractions of the test set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from lmmreg.config import parse_params
from lmmreg.stages import plan
from tests.conftest import REPO, small_raw_params
from tests.test_pipeline import prepare_inputs

pytestmark = pytest.mark.slow


def test_a_run_is_live_while_it_trains(mlflow_root):
    from mlflow.tracking import MlflowClient

    root = mlflow_root
    raw = small_raw_params(seeds=[0])
    raw["train"].update(methods=["finetune"], epochs=1500, budget="epochs")  # ~10 s of training on 24 images
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = parse_params(raw)
    paths = prepare_inputs(params, root)
    plan.main(params, dataset="demo", paths=paths, out=root / "data/plan/demo")
    out = root / "models/demo/methods/finetune"
    cmd = [sys.executable, "-m", "lmmreg.stages.train", "--dataset", "demo", "--method", "finetune",
           "--plan", str(root / "data/plan/demo/finetune.json"), "--manifest", str(paths.manifest),
           "--features", str(paths.features), "--text", str(paths.text), "--centroids", str(paths.centroids),
           "--out", str(out)]
    env = {**os.environ, "DVC_ROOT": str(root), "PYTHONPATH": str(REPO / "src"), "LMMREG_MLFLOW_FLUSH_S": "1"}
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    seen_running: list[int] = []  # epochs logged, at each look while the run was RUNNING
    while proc.poll() is None:
        time.sleep(0.3)
        try:
            exp = client.get_experiment_by_name("lmmreg")
            runs = client.search_runs([exp.experiment_id], "tags.`lmmreg.kind` = 'child'") if exp else []
        except Exception:  # noqa: BLE001 - the store may be mid-creation by the stage
            continue
        for r in runs:
            if r.info.status == "RUNNING":
                seen_running.append(len(client.get_metric_history(r.info.run_id, "test_acc")))
    log = proc.stdout.read()
    assert proc.returncode == 0, log[-3000:]
    result = json.loads((out / "result.json").read_text())
    run = client.get_run(result["runs"]["s0"]["run_id"])
    history = client.get_metric_history(run.info.run_id, "test_acc")
    assert run.info.status == "FINISHED" and len(history) == 1500
    # Seen from this process while it trained: RUNNING, with some but not yet all epochs.
    assert any(0 < n < 1500 for n in seen_running), seen_running[:20]
    stamps = [m.timestamp for m in sorted(history, key=lambda m: m.step)]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]  # each epoch at its own time
    trained = result["runs"]["s0"]["seconds"]
    duration = (run.info.end_time - run.info.start_time) / 1000
    assert abs(duration - trained) <= 0.2 * trained, (duration, trained)
    n_test = 12  # 3 classes x 4 test images
    for value in [m.value for m in history] + [run.data.metrics["reported_test_acc"]]:
        assert value == 100.0 * round(value * n_test / 100) / n_test  # exactly k / 12, no float32 noise
