"""The registered classifier, for real: trained by the train stage, loaded through the registry, served by
`mlflow models serve` on 127.0.0.1; plus what the runs table shows (names, params once, summary metrics)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from lmmreg import classifier, tracking
from lmmreg.data.manifest import load_manifest
from lmmreg.stages import train_all
from tests.test_pipeline import run_pipeline

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict, timeout: float = 60) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def test_champion_is_registered_predicts_from_images_and_is_served(small_params, mlflow_root, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("DVC_EXP_NAME", "exp-test")
    root = mlflow_root
    summary = run_pipeline(small_params, root)
    client = MlflowClient(tracking.tracking_uri())
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}

    # The runs table: names that say what a run is, each param once under its dotted name, summary metrics.
    parent = runs["exp-test · demo"]
    assert "demo · lmm_reg · seed 0 · α=0.01" in runs and "demo · zero_shot · seed 1" in runs
    child = runs["demo · lmm_reg · seed 0 · α=0.01"]
    assert {"alpha", "train.lr", "train.epochs", "clip.model", "describe.backend", "method", "seed"} <= set(
        child.data.params)
    assert not {"lr", "epochs", "clip_model", "lmm_backend", "train.methods"} & set(child.data.params)
    assert child.data.params["alpha"] == "0.01" and child.data.params["train.lr"] == "0.0001"
    metrics = json.loads((root / "metrics/demo.json").read_text())["demo"]
    for m in small_params.train.methods:
        assert parent.data.metrics[f"test_acc.{m}"] == pytest.approx(metrics["test_acc"][m], abs=1e-3)
        assert f"test_acc_std.{m}" in parent.data.metrics
    assert json.loads(exp.tags["mlflow.sharedViewState.lmmreg"]) == tracking.view_state(small_params.train.methods)

    # The champion: the best servable method, registered with its alias, linked to the run it came from.
    version = client.get_model_version_by_alias("lmmreg-demo", "champion")
    method, seed = version.tags["lmmreg.method"], int(version.tags["lmmreg.seed"])
    servable = {m: s for m, s in summary.items() if m in classifier.SERVABLE}  # not concat, not the baselines
    assert servable[method]["test_acc_mean"] == max(s["test_acc_mean"] for s in servable.values())
    assert version.tags["lmmreg.run_id"] == summary[method]["runs"][f"s{seed}"]["run_id"]

    # From image files it predicts what the pipeline predicted from its cached features, as class names.
    model = mlflow.pyfunc.load_model("models:/lmmreg-demo@champion")
    records, classes = load_manifest(root / "data/prepared/demo")
    test = [r for r in records if r.split == "test"]
    paths = [str(root / "data/raw/demo" / r.path) for r in test]
    got = model.predict(paths)
    run_preds = tracking.load_json_artifact(version.tags["lmmreg.run_id"], "predictions.json")
    assert run_preds["ids"] == [r.id for r in test]
    assert got == [classes[k] for k in run_preds["preds"]]
    from PIL import Image

    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths[:3]]
    assert model.predict(arrays) == got[:3]  # [H, W, 3] uint8 arrays give the same answers
    with pytest.raises(Exception, match="image array"):
        model.predict([np.zeros((2, 2, 2, 2))])

    # `mlflow models serve --env-manager local` answers /invocations with the same class names.
    port = _free_port()
    bindir = os.path.dirname(sys.executable)  # the server execs `uvicorn` from PATH, as in an activated venv
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri(), "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    mlflow_bin = os.path.join(bindir, "mlflow")
    server = subprocess.Popen([mlflow_bin, "models", "serve", "-m", "models:/lmmreg-demo@champion", "--env-manager",
                               "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    log = server.stderr.read()[-2000:]
                    raise AssertionError(f"mlflow models serve did not come up: {log}") from None
                time.sleep(1)
        body = {"inputs": [paths[0], arrays[1].tolist()]}
        assert _post(f"http://127.0.0.1:{port}/invocations", body) == {"predictions": got[:2]}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_log_model_false_logs_no_model(small_params, mlflow_root, monkeypatch):
    """A train invocation logs one model or, when asked, none; never one per (method, seed); and none when its best
    is worse than the champion (unless LMMREG_REGISTER=every)."""
    import dataclasses

    from mlflow.tracking import MlflowClient

    params = dataclasses.replace(small_params, train=dataclasses.replace(small_params.train, methods=["finetune"]))
    root = mlflow_root
    run_pipeline(params, root)
    client = MlflowClient(tracking.tracking_uri())
    assert len(client.search_model_versions("name = 'lmmreg-demo'")) == 1
    assert str(client.get_model_version_by_alias("lmmreg-demo", "champion").version) == "1"
    train_all.main(params, dataset="demo", manifest=root / "data/prepared/demo",
                   features=root / "data/features/demo.pt", text=root / "data/text/demo",
                   centroids=root / "data/centroids/demo.pt", models=root / "models/x",
                   metrics=root / "metrics/x.json", plots=root / "plots/x.csv", log_model=False)
    assert len(client.search_model_versions("name = 'lmmreg-demo'")) == 1

    # A train below the champion logs no model: the registry holds champions, not one version per ablation point.
    # (The champion's score is raised by hand: the small setting's budgets tie.)
    def train_again(out: str) -> dict:
        train_all.main(params, dataset="demo", manifest=root / "data/prepared/demo",
                       features=root / "data/features/demo.pt", text=root / "data/text/demo",
                       centroids=root / "data/centroids/demo.pt", models=root / f"models/{out}",
                       metrics=root / f"metrics/{out}.json", plots=root / f"plots/{out}.csv")
        return json.loads((root / f"models/{out}/runs.json").read_text())

    client.set_model_version_tag("lmmreg-demo", "1", "lmmreg.score", "99.5")
    got = train_again("y")
    assert got["model"]["registered"] is None and "below the champion's 99.50 (version 1)" in got["model"]["not_logged"]
    assert len(client.search_model_versions("name = 'lmmreg-demo'")) == 1
    parent = client.get_run(got["parent_run_id"])
    assert parent.data.tags["lmmreg.model"].startswith("not logged: finetune's mean test accuracy")

    # LMMREG_REGISTER=every logs it anyway, as a plain version; `champion` stays on the better one.
    monkeypatch.setenv("LMMREG_REGISTER", "every")
    got = train_again("z")
    assert len(client.search_model_versions("name = 'lmmreg-demo'")) == 2
    assert got["model"]["registered"] == "models:/lmmreg-demo/2" and not got["model"]["champion"]
    assert str(client.get_model_version_by_alias("lmmreg-demo", "champion").version) == "1"
    monkeypatch.delenv("LMMREG_REGISTER")

    # At the champion's score (a tie), the newer run is logged and becomes the champion.
    client.set_model_version_tag("lmmreg-demo", "1", "lmmreg.score", repr(got["methods"]["finetune"]["test_acc_mean"]))
    got = train_again("t")
    assert got["model"]["registered"] == "models:/lmmreg-demo@champion" and got["model"]["champion"]
    assert str(client.get_model_version_by_alias("lmmreg-demo", "champion").version) == "3"

    monkeypatch.setenv("LMMREG_REGISTER", "sometimes")
    with pytest.raises(ValueError, match="LMMREG_REGISTER='sometimes'"):
        train_again("w")
