"""A teammate's first experiment (issue 27), for real: the runs DVC restores are not in the store they log to.

One project runs `dvc repro`, commits and pushes to a DVC remote and a bare git remote. Then, in each flow, an
α experiment re-trains LMM-Reg. alone while DVC restores finetune's results, whose run id the store in use has
never seen; it must finish, the store's newest parent run must show every method (the copy of finetune's run
among its children), and `dvc repro report` must build the tables:
1. a fresh clone, `dvc pull`, an empty local store;
2. the same clone against a fresh `mlflow server`;
3. the original project, switched to a new server between its baseline and the experiment.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.dvc_repo import DVC, make_repo, run
from tests.test_dvc_tracking_server import mlflow_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

METHODS = {"finetune", "lmm_reg"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(project, bare git origin, env): after `dvc repro`, the baseline commit and `dvc push` to a directory."""
    base = tmp_path_factory.mktemp("teammate")
    repo = base / "repo"
    env = make_repo(repo, venv=True)
    run([DVC, "repro"], repo, env)
    run([DVC, "remote", "add", "-d", "team", str(base / "dvc-remote")], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline run"], repo, env)
    run([DVC, "push"], repo, env)
    origin = base / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], base, env)
    run(["git", "push", "-q", str(origin), "main"], repo, env)
    return repo, origin, env


def _clone(origin: Path, where: Path, project: Path, env: dict) -> Path:
    clone = where / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], where, env)
    (clone / ".venv").symlink_to(project / ".venv")  # the teammate ran `make setup`
    run([DVC, "pull"], clone, env)
    assert not (clone / "mlflow.db").exists()  # the store is not under DVC: a clone starts without one
    return clone


def _experiment(repo: Path, env: dict, alpha: str) -> str:
    res = subprocess.run([DVC, "exp", "run", "-S", f"alpha={alpha}"], cwd=repo, env=env, capture_output=True,
                         text=True, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "Running stage 'train@demo-lmm_reg'" in out and "Running stage 'train@demo-finetune'" not in out, out
    assert "Traceback" not in out
    return out


def _runs_table(uri: str) -> tuple[dict, list]:
    """The newest parent run in store `uri` and its children (what `mlflow ui` shows nested under it)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("lmmreg")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = max((r for r in runs if r.data.tags.get("lmmreg.kind") == "parent"), key=lambda r: r.info.start_time)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def _check(repo: Path, env: dict, uri: str, out: str) -> str:
    parent, children = _runs_table(uri)
    assert {f"test_acc.{m}" for m in METHODS} <= set(parent.data.metrics)
    assert {r.data.tags["lmmreg.method"] for r in children} == METHODS  # every method of the experiment's parent
    copied = [r for r in children if "lmmreg.origin_run_id" in r.data.tags]
    assert [r.data.tags["lmmreg.method"] for r in copied] == ["finetune"]
    assert copied[0].info.status == "FINISHED" and copied[0].data.metrics["reported_test_acc"] >= 0
    line = next(x for x in out.splitlines() if "copied into this store" in x)
    run([DVC, "repro", "report"], repo, env)
    tables = (repo / "reports/tables.md").read_text()
    table1 = tables.split("## Table 1")[1].split("## Table 2")[0]
    assert "missing" not in table1 and table1.count("(n=1)") == 2, table1
    print(f"\n{uri}: {line.split(': ', 1)[-1]}; copy of {copied[0].data.tags['lmmreg.origin_run_id']} is "
          f"{copied[0].info.run_id}")
    return line


def test_a_fresh_clone_with_an_empty_local_store(shared, tmp_path):
    project, origin, env = shared
    clone = _clone(origin, tmp_path, project, env)
    out = _experiment(clone, env, "0.3")
    line = _check(clone, env, f"sqlite:///{clone / 'mlflow.db'}", out)
    assert re.search(r"1 new run\(s\), 1 reused unchanged \(1 copied", line), line


def test_a_fresh_clone_against_a_new_tracking_server(shared, tmp_path, mlflow_server):  # noqa: F811
    project, origin, env = shared
    uri, _ = mlflow_server
    clone = _clone(origin, tmp_path, project, env)
    env = {**env, "MLFLOW_TRACKING_URI": uri}
    out = _experiment(clone, env, "0.2")
    _check(clone, env, uri, out)
    assert not (clone / "mlflow.db").exists()


def test_the_project_switched_to_a_new_server_between_baseline_and_experiment(shared, mlflow_server):  # noqa: F811
    project, _, env = shared
    uri, _ = mlflow_server
    env = {**env, "MLFLOW_TRACKING_URI": uri}
    try:
        out = _experiment(project, env, "0.4")
        _check(project, env, uri, out)
    finally:
        run(["git", "checkout", "--", "."], project, {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"})


def test_a_server_that_is_down_stops_the_stage_in_seconds_with_one_line(shared, tmp_path):
    project, _, env = shared
    from tests.dvc_repo import free_port

    env = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    res = subprocess.run([str(project / "bin/python"), "-m", "lmmreg.stages.summarize", "--dataset", "demo",
                          "--manifest", "data/prepared/demo", "--features", "data/features/demo.pt", "--text",
                          "data/text/demo", "--centroids", "data/centroids/demo.pt", "--methods",
                          "models/demo/methods", "--runs", str(tmp_path / "runs.json"), "--metrics",
                          str(tmp_path / "m.json"), "--plots", str(tmp_path / "p.csv")], cwd=project,
                         env={**env, **{k: v for k, v in os.environ.items() if k == "HOME"}}, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "does not answer" in res.stderr and "re-run `dvc repro`" in res.stderr
    assert not (tmp_path / "runs.json").exists()
