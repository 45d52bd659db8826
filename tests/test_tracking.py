import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

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
    history = [{"epoch": e, "test_acc": 50.0 + e, "train_loss": 1.0 / e} for e in range(1, 6)]
    with tracking.LiveRuns(dataset="demo") as live:
        live.start(0, name="demo/lmm_reg/s0", params={"alpha": 0.1, "train": {"lr": 1e-4}, "seed": 0},
                   tags={"lmmreg.method": "lmm_reg", "lmmreg.config_id": "abc", "lmmreg.seed": "0"})
        for row in history:
            live.log_epoch(0, row)
        run_id = live.finish(0, final={"reported_test_acc": 55.0},
                             artifacts={"predictions.json": {"ids": ["a"], "labels": [1], "preds": [1]},
                                        "head.pt": {"w": [1, 2]}})
    logger = tracking.RunLogger(dataset="demo", params={"alpha": 0.1, "train": {"lr": 1e-4}}, tags={})
    # the parent of the runs this invocation trained
    assert logger.adopt(tracking.resolve_runs({run_id: Path("unused")})) == ([run_id], [])
    logger.close()
    runs = tracking.search_child_runs({"lmmreg.config_id": "abc"})
    assert [r["run_id"] for r in runs] == [run_id]
    r = runs[0]
    assert r["params"] == {"alpha": "0.1", "train.lr": "0.0001", "seed": "0"}  # once, under the dotted name
    assert r["tags"]["dvc.exp_name"] == "exp-test" and r["tags"]["mlflow.parentRunId"] == logger.parent_id
    assert tracking.metric_history(run_id, "test_acc") == [(e, 50.0 + e) for e in range(1, 6)]
    assert tracking.load_json_artifact(run_id, "predictions.json")["preds"] == [1]
    # By the run's artifact URI (the report's way): the file read in place, the same JSON.
    assert r["artifact_uri"].startswith("file://")
    assert tracking.load_json_artifact(run_id, "predictions.json", artifact_uri=r["artifact_uri"]) == \
        {"ids": ["a"], "labels": [1], "preds": [1]}
    # The store and the artifacts live at the project root, where `mlflow ui` run from the root finds them.
    assert (mlflow_root / "mlflow.db").is_file()
    assert list(Path(mlflow_root / "mlartifacts").rglob("head.pt"))


def test_run_names():
    assert tracking.child_run_name("demo", "lmm_reg", 2, 0.01) == "demo · lmm_reg · seed 2 · α=0.01"
    assert tracking.child_run_name("demo", "finetune", 0, 0.0) == "demo · finetune · seed 0 · α=0"
    assert tracking.child_run_name("bar", "zero_shot", 1, None) == "bar · zero_shot · seed 1"


def test_parent_name_is_the_experiment_and_what_changed(monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    assert tracking.parent_run_name("demo", {}) == "repro · demo"
    monkeypatch.setenv("DVC_EXP_NAME", "sunny-yawl")
    changes = tracking.changed_params({"alpha": 0.1, "train": {"lr": 1e-3, "epochs": 100, "methods": ["lmm_reg"]},
                                       "clip": {"augment_views": 4}},
                                      {"alpha": 0.01, "train": {"lr": 1e-4, "epochs": 100, "methods": ["lmm_reg"]}})
    assert changes == {"alpha": "0.1", "train.lr": "0.001"}  # clip.augment_views is not in the baseline
    assert tracking.parent_run_name("demo", changes) == "sunny-yawl · demo · alpha=0.1, train.lr=0.001"
    many = {f"k{i}": str(i) for i in range(5)}
    assert tracking.parent_run_name("demo", many) == "sunny-yawl · demo · k0=0, k1=1, k2=2 +2"


def test_committed_params_come_from_the_baseline_commit(tmp_path, monkeypatch):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    (tmp_path / "params.yaml").write_text("alpha: 0.01\ntrain: {lr: 1.0e-4}\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "params.yaml").write_text("alpha: 0.5\ntrain: {lr: 1.0e-4}\n")  # what `dvc exp run -S` does
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", rev)
    base = tracking.committed_params(root=tmp_path)
    assert base == {"alpha": 0.01, "train": {"lr": 1e-4}}
    current = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert tracking.changed_params(current, base) == {"alpha": "0.5"}
    assert tracking.committed_params(root=tmp_path / "nope") is None  # not a repository: no names, no error


def test_view_state_is_what_the_mlflow_ui_reads():
    """The tag's JSON: MLflow 3.x picks `selectedColumns` (UI state) and `orderByKey`/`orderByAsc` (search facets)
    out of it, with column keys written `params.\\`name\\`` / `metrics.\\`name\\``."""
    state = tracking.view_state(["finetune", "lmm_reg"])
    assert json.loads(json.dumps(state)) == state
    cols = state["selectedColumns"]
    for p in ("alpha", "train.lr", "train.shots", "method", "seed"):
        assert f"params.`{p}`" in cols
    for m in ("reported_test_acc", "test_acc.finetune", "test_acc.lmm_reg"):
        assert f"metrics.`{m}`" in cols
    assert "attributes.`Models`" in cols
    assert state["orderByKey"] == "metrics.`test_acc.lmm_reg`" and state["orderByAsc"] is False
    assert tracking.view_state(["linear_probe"])["orderByKey"] == "metrics.`reported_test_acc`"


def test_ui_link(mlflow_root, monkeypatch):
    assert tracking.ui_link("7") == ("http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
                                     "&viewStateShareKey=lmmreg")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team:8080/")
    assert tracking.ui_link("7").startswith("http://mlflow.team:8080/#/experiments/7/runs?")


@pytest.mark.slow
def test_link_command_stores_the_view_on_the_experiment(mlflow_root, capsys):
    from mlflow.tracking import MlflowClient

    (mlflow_root / "params.yaml").write_text("train:\n  methods: [finetune, lmm_reg]\n")
    tracking.main(["link"])
    out = capsys.readouterr().out
    exp = MlflowClient(tracking.tracking_uri()).get_experiment_by_name(tracking.EXPERIMENT)
    assert f"#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey=lmmreg" in out
    assert json.loads(exp.tags["mlflow.sharedViewState.lmmreg"]) == tracking.view_state(["finetune", "lmm_reg"])


# ------------------------------------------------------------------------------------- killed runs

_CHILD = """
import os, signal, sys, time
from lmmreg import tracking
with tracking.LiveRuns(dataset="demo") as live:  # a train stage, mid-training
    run_id = live.start(0, name="c", params={"seed": 0}, tags={"lmmreg.seed": "0"})
    live.log_epoch(0, {"epoch": 1, "test_acc": 50.0})
    print(run_id, flush=True)
    if sys.argv[1] == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)
"""


def _start_child(mode: str, root: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "DVC_ROOT": str(root)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_CHILD), mode], env=env, stdout=subprocess.PIPE,
                            text=True)
    parent_id = proc.stdout.readline().strip()
    assert parent_id, "the child process did not start its runs"
    return proc, parent_id


def _run(run_id: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking.tracking_uri()).get_run(run_id)


@pytest.mark.slow
def test_sigterm_ends_the_open_runs_as_killed(mlflow_root):
    tracking.init_store()
    proc, parent_id = _start_child("sleep", mlflow_root)
    proc.send_signal(signal.SIGTERM)  # what `dvc queue kill` / a CI timeout sends
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    run = _run(parent_id)
    assert run.info.status == "KILLED" and run.data.tags["lmmreg.killed_reason"] == "received SIGTERM"


@pytest.mark.slow
def test_next_start_ends_the_runs_a_sigkilled_process_left_running(mlflow_root):
    from mlflow.tracking import MlflowClient

    tracking.init_store()
    proc, parent_id = _start_child("sigkill", mlflow_root)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert _run(parent_id).info.status == "RUNNING"  # nothing could close it
    client = MlflowClient(tracking.tracking_uri())
    exp_id = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    # A run of a live process (a queued experiment beside this one) and another dataset's run stay RUNNING.
    live = client.create_run(exp_id, tags={"lmmreg.dataset": "demo", "lmmreg.process": tracking.process_identity()})
    other = client.create_run(exp_id, tags={"lmmreg.dataset": "bar", "lmmreg.process": "x:y:1:2"})
    time.sleep(0.01)
    with tracking.RunLogger(dataset="demo", params={}, tags={}) as logger:
        pass
    run = _run(parent_id)
    assert run.info.status == "KILLED" and "ended without closing the run" in run.data.tags["lmmreg.killed_reason"]
    assert _run(live.info.run_id).info.status == "RUNNING" and _run(other.info.run_id).info.status == "RUNNING"
    assert _run(logger.parent_id).info.status == "FINISHED"


@pytest.mark.slow
def test_an_exception_ends_the_runs_as_failed(mlflow_root):
    with pytest.raises(RuntimeError):
        with tracking.RunLogger(dataset="demo", params={}, tags={}) as logger:
            raise RuntimeError("boom")
    run = _run(logger.parent_id)
    assert run.info.status == "FAILED" and run.data.tags["lmmreg.failed_reason"] == "RuntimeError: boom"
    with pytest.raises(ValueError):
        with tracking.LiveRuns(dataset="demo") as live:
            run_id = live.start(0, name="c", params={}, tags={})
            live.log_epoch(0, {"epoch": 1, "test_acc": 50.0})
            raise ValueError("bad input")
    run = _run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["lmmreg.failed_reason"] == "ValueError: bad input"
    assert [m.value for m in _client_history(run_id)] == [50.0]  # what arrived before the error is kept


def _client_history(run_id: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking.tracking_uri()).get_metric_history(run_id, "test_acc")


def test_mlflow_notices_a_user_cannot_act_on_are_dropped_and_nothing_else(tmp_path, monkeypatch):
    """A new SQLite store's table-creation lines (init_store prints the store instead) and the uv-project lines
    MLflow writes for every logged model are dropped; any other record of those loggers passes."""
    import logging

    from lmmreg.tracking.models import quiet_model_logging
    from lmmreg.tracking.store import init_store

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(f"{record.name}: {record.getMessage()}")

    handler = Keep(level=logging.DEBUG)
    names = ("mlflow.store.db.utils", "mlflow.utils.uv_utils")
    for name in names:
        logging.getLogger(name).addHandler(handler)
        monkeypatch.setattr(logging.getLogger(name), "level", logging.INFO)
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert init_store("quiet")
        assert (tmp_path / "mlflow.db").is_file() and seen == []  # the tables were created, silently
        uv = logging.getLogger("mlflow.utils.uv_utils")
        with quiet_model_logging():
            uv.info("Detected uv project: found uv.lock and pyproject.toml in %s", tmp_path)
            uv.info("Copied uv.lock to model artifacts")
            uv.info("Copied pyproject.toml to model artifacts")
            uv.info("something a user can act on")
        uv.info("Copied uv.lock to model artifacts")  # outside the block: MLflow's own behaviour
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(handler)
    assert seen == ["mlflow.utils.uv_utils: something a user can act on",
                    "mlflow.utils.uv_utils: Copied uv.lock to model artifacts"]
