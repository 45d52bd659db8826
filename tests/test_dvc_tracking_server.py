"""A team's tracking server, for real: `MLFLOW_TRACKING_URI=http://...` through `dvc repro` and two queued
experiments running in parallel.

Starts `mlflow server` on 127.0.0.1 (SQLite backend, artifacts proxied by the server: `--serve-artifacts`,
`--artifacts-destination`), runs the pipeline and a two-point alpha sweep (`dvc queue start -j 2`) against it,
and checks that no run and no artifact is lost: every expected child run is FINISHED on the server with its
artifacts downloadable through it, nothing was written to the project's local store, and the workspace report
picks the sweep up after `dvc repro report`.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest

from tests.dvc_repo import BIN, DVC, free_port, git_env, local_server, make_repo, run, wait_for_queue

pytestmark = pytest.mark.slow


@pytest.fixture
def mlflow_server(tmp_path):
    """(URI, artifact folder) of a real `mlflow server` with artifact proxying, stopped after the test."""
    port, srv = free_port(), tmp_path / "server"
    srv.mkdir()
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{srv / 'mlflow.db'}", "--artifacts-destination", str(srv / "artifacts"),
           "--serve-artifacts"]
    uri = f"http://127.0.0.1:{port}"
    # A cold start takes ~10 s alone, ~50 s on a loaded 2-core machine. No telemetry; no job runner (MLflow 3
    # starts seven task consumers for its GenAI jobs, which this project does not use).
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with local_server(cmd, url=f"{uri}/health", log=srv / "server.log", env=env):
        yield uri, srv / "artifacts"


def test_queued_experiments_in_parallel_lose_no_run_or_artifact(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    uri, artifact_dir = mlflow_server
    repo = tmp_path / "repo"
    env = git_env(MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true")
    t0 = time.time()
    make_repo(repo, env=env)
    run([DVC, "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline run"], repo, env)
    for alpha in ("0.1", "0.5"):
        run([DVC, "exp", "run", "--queue", "-S", f"alpha={alpha}"], repo, env)
    run([DVC, "queue", "start", "-j", "2"], repo, env)  # the workers inherit this environment
    status = wait_for_queue(repo, env)
    assert status.count("Success") == 2 and "Failed" not in status, status
    sweep_s = time.time() - t0

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("lmmreg")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get("lmmreg.kind") == "child"]
    parents = [r for r in runs if r.data.tags.get("lmmreg.kind") == "parent"]
    # Baseline + 2 experiments: a parent each. The baseline trains a child per (method, seed) = 2 x 1; an alpha
    # experiment re-trains LMM-Reg. only and its parent names the fine-tuning run it reused (incremental training).
    assert len(parents) == 3 and len(children) == 4, [(r.info.run_name, r.data.tags) for r in runs]
    finetune = [r.info.run_id for r in children if r.data.tags["lmmreg.method"] == "finetune"]
    assert len(finetune) == 1
    exp_parents = [r for r in parents if r.data.tags.get("dvc.exp_name")]
    assert len(exp_parents) == 2
    for p in exp_parents:
        assert json.loads(p.data.tags["lmmreg.reused_runs"]) == finetune, p.data.tags
    assert all(r.info.status == "FINISHED" for r in runs)
    got = sorted((r.data.tags["lmmreg.method"], r.data.params["alpha"], r.data.tags.get("dvc.exp_name", ""))
                 for r in children)
    lmm_alphas = sorted(a for m, a, _ in got if m == "lmm_reg")
    assert lmm_alphas == ["0.01", "0.1", "0.5"], got
    assert len({name for _, _, name in got if name}) == 2  # both queued experiments, tagged with their names
    assert sorted(m for m, _, _ in got) == ["finetune", "lmm_reg", "lmm_reg", "lmm_reg"], got

    n_files = 0
    with tempfile.TemporaryDirectory() as dst:
        for r in children:
            assert r.info.artifact_uri.startswith("mlflow-artifacts:"), r.info.artifact_uri  # proxied by the server
            names = {a.path for a in client.list_artifacts(r.info.run_id)}
            assert {"predictions.json"} <= names, names
            for name in names:
                local = Path(client.download_artifacts(r.info.run_id, name, f"{dst}/{r.info.run_id}"))
                assert local.stat().st_size > 0
                n_files += 1
            preds = json.loads((Path(dst) / r.info.run_id / "predictions.json").read_text())
            assert len(preds["ids"]) == len(preds["preds"]) > 0
    assert len(list(artifact_dir.rglob("predictions.json"))) == 4
    assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists()  # nothing went local

    # The workspace learns of the sweep's runs (the stamp), and its report shows them, from the server.
    assert "report" in run([DVC, "status"], repo, env)
    run([DVC, "repro", "report"], repo, env)
    ablation = (repo / "reports/tables.md").read_text().split("alpha (the alpha ablation)")[1].split("###")[0]
    for alpha in ("| 0.01 |", "| 0.1 |", "| 0.5 |"):
        assert ablation.count(alpha) == 1, ablation
    assert "Data and pipelines are up to date." in run([DVC, "status"], repo, env)
    print(f"\nserver test: {len(runs)} runs, {n_files} artifact files downloaded through the server; "
          f"repro + 2 queued experiments in {sweep_s:.0f} s")
