"""Runs DVC restored that the current store lacks (issue 27): re-logged from the train stage's run record.

A teammate's first experiment after `git clone` + `dvc pull` logs to an empty store (or a new server) while DVC
restores the unchanged methods' results, run ids included. `resolve_runs` gives each such run a copy made from
its record, once; a run deleted in the UI or a server that does not answer is one clear error, in seconds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lmmreg import tracking
from lmmreg.errors import StoreError
from tests.dvc_repo import free_port

HISTORY = [{"epoch": e, "test_acc": 50.0 + e, "train_loss": 1.0 / e} for e in range(1, 4)]
PREDS = {"ids": ["a", "b"], "labels": [1, 0], "preds": [1, 1]}


def _train_one(folder: Path) -> str:
    """One live run as the train stage logs it, with its record and head file in `folder` (the stage's outputs)."""
    folder.mkdir(parents=True)
    (folder / "s0.pt").write_bytes(b"head bytes")
    with tracking.LiveRuns(dataset="demo") as live:
        live.start(0, name="demo · lmm_reg · seed 0 · α=0.1", params={"alpha": 0.1, "train": {"lr": 1e-4}, "seed": 0},
                   tags={"lmmreg.method": "lmm_reg", "lmmreg.config_id": "abc", "lmmreg.seed": "0"})
        for row in HISTORY:
            live.log_epoch(0, row)
        run_id = live.finish(0, final={"reported_test_acc": 52.5}, tags={"lmmreg.converged": "true"},
                             artifacts={"predictions.json": PREDS, "head.pt": folder / "s0.pt"})
        tracking.write_record(live.record(0), tracking.record_path(folder, 0))
    return run_id


def _view(run_id: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking.tracking_uri())
    run = client.get_run(run_id)
    return {"name": run.info.run_name, "status": run.info.status, "params": run.data.params,
            "metrics": run.data.metrics, "start": run.info.start_time, "end": run.info.end_time,
            "tags": {k: v for k, v in run.data.tags.items() if k.startswith(("lmmreg.", "mlflow.source"))},
            "history": tracking.metric_history(run_id, "test_acc"),
            "predictions": tracking.load_json_artifact(run_id, "predictions.json"),
            "artifacts": sorted(a.path for a in client.list_artifacts(run_id))}


def test_a_run_missing_from_the_store_is_copied_once_from_its_record(tmp_path, monkeypatch):
    origin, teammate = tmp_path / "origin", tmp_path / "teammate"
    for root in (origin, teammate):
        root.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(origin))
    folder = tmp_path / "methods" / "lmm_reg"
    run_id = _train_one(folder)
    want = _view(run_id)
    assert tracking.resolve_runs({run_id: tracking.record_path(folder, 0)}) == \
        {run_id: {"run_id": run_id, "parent": None, "copied": False}}  # the store that trained it: as it is

    monkeypatch.setenv("DVC_ROOT", str(teammate))  # an empty store: the teammate's clone after `dvc pull`
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri exported the first store
    resolved = tracking.resolve_runs({run_id: tracking.record_path(folder, 0)})
    copy = resolved[run_id]["run_id"]
    assert copy != run_id and resolved[run_id]["copied"]
    got = _view(copy)
    assert got["tags"].pop("lmmreg.origin_run_id") == run_id
    assert got["tags"].pop("lmmreg.origin_store") == "sqlite (the project's mlflow.db)"
    assert got == want  # params, metrics (history and final), tags, times, predictions, every artifact

    parent = tracking.RunLogger(dataset="demo", params={"alpha": 0.2}, tags={})
    assert parent.adopt(resolved) == ([], [copy])  # reused, not trained here; adopted under this parent
    parent.close()
    again = tracking.resolve_runs({run_id: tracking.record_path(folder, 0)})
    assert again[run_id] == {"run_id": copy, "parent": parent.parent_id, "copied": True}  # found, not copied again


def test_a_deleted_run_or_a_missing_record_is_one_clear_error(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    folder = tmp_path / "methods" / "finetune"
    run_id = _train_one(folder)
    MlflowClient(tracking.tracking_uri()).delete_run(run_id)
    with pytest.raises(StoreError, match=rf"run {run_id} .* was deleted .*mlflow runs restore --run-id {run_id}"):
        tracking.resolve_runs({run_id: tracking.record_path(folder, 0)})
    with pytest.raises(StoreError, match=r"run 0123abc is not in the store .* its record .*s7\.run\.json is missing"):
        tracking.resolve_runs({"0123abc": tracking.record_path(folder, 7)})
    record = json.loads(tracking.record_path(folder, 0).read_text())
    assert set(record) >= {"run_id", "store", "name", "params", "tags", "metrics", "json", "files"}


def test_a_server_that_does_not_answer_is_found_in_seconds(monkeypatch, tmp_path):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(StoreError, match=r"does not answer .* re-run `dvc repro`"):
        tracking.init_store()
    assert time.perf_counter() - start < 5
