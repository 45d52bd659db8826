import json
import subprocess
from pathlib import Path

import pytest

from lmmreg import tracking


def test_store_resolves_from_dvc_root(mlflow_root, monkeypatch, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # like .dvc/tmp/exps/tmpXXXX: the cwd is not the project root
    assert tracking.tracking_uri() == f"sqlite:///{mlflow_root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"


def test_git_ignored_uri_file_names_this_machines_store(mlflow_root, monkeypatch, tmp_path):
    # Read from the project root, so queued experiments find it whatever environment started the queue.
    (mlflow_root / ".mlflow-uri").write_text("http://team-server:5000\n")
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == "http://team-server:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")  # the environment wins
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"
    ignored = subprocess.run(["git", "check-ignore", ".mlflow-uri", "metrics/last_run.json"],
                             cwd=Path(__file__).parents[1], capture_output=True, text=True)
    assert ignored.returncode == 0 and ignored.stdout.split() == [".mlflow-uri"]  # the stamp is committed


def test_stamp_names_the_run_without_machine_paths_or_credentials(mlflow_root, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "sweep-1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:secret@team-server:5000")
    tracking.write_stamp("r1", {"lmmreg.method": "lmm_reg", "lmmreg.alpha": "0.1", "other": "x"})
    stamp = json.loads((mlflow_root / tracking.STAMP).read_text())
    assert stamp["run_id"] == "r1" and stamp["dvc.exp_name"] == "sweep-1" and stamp["lmmreg.alpha"] == "0.1"
    assert stamp["tracking_uri"] == "http://team-server:5000" and "other" not in stamp
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    tracking.write_stamp("r2", {})
    text = (mlflow_root / tracking.STAMP).read_text()
    assert '"r2"' in text and str(mlflow_root) not in text


def test_root_falls_back_to_the_folder_holding_dvc_yaml(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "src" / "x").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "src" / "x")
    assert tracking.project_root() == tmp_path.resolve()


@pytest.mark.slow
def test_child_run_round_trip(mlflow_root, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-test")
    logger = tracking.RunLogger(dataset="demo", params={"alpha": 0.1, "train": {"lr": 1e-4}}, tags={})
    history = [{"epoch": e, "test_acc": 50.0 + e, "train_loss": 1.0 / e} for e in range(1, 6)]
    run_id = logger.log_child(name="demo/lmm_reg/s0", params={"alpha": 0.1, "lr": 1e-4, "seed": 0},
                              tags={"lmmreg.method": "lmm_reg", "lmmreg.config_id": "abc", "lmmreg.seed": "0"},
                              history=history, final={"reported_test_acc": 55.0},
                              artifacts={"predictions.json": {"ids": ["a"], "labels": [1], "preds": [1]},
                                         "head.pt": {"w": [1, 2]}})
    logger.close()
    runs = tracking.search_child_runs({"lmmreg.config_id": "abc"})
    assert [r["run_id"] for r in runs] == [run_id]
    r = runs[0]
    assert r["params"]["alpha"] == "0.1" and r["params"]["lr"] == "0.0001"
    assert r["tags"]["dvc.exp_name"] == "exp-test" and r["tags"]["mlflow.parentRunId"] == logger.parent_id
    assert tracking.metric_history(run_id, "test_acc") == [(e, 50.0 + e) for e in range(1, 6)]
    assert tracking.load_json_artifact(run_id, "predictions.json")["preds"] == [1]
    # The store and the artifacts live at the project root, where `mlflow ui` run from the root finds them.
    assert (mlflow_root / "mlflow.db").is_file()
    assert list(Path(mlflow_root / "mlartifacts").rglob("head.pt"))
