"""Four queued experiments at `dvc queue start -j 4` against a real `mlflow server`: no run lost, none left RUNNING.

The small params of tests/dvc_repo.py (one seed, finetune and lmm_reg, three epochs). Every experiment's lmm_reg
(the method alpha changes) must end as exactly one FINISHED run on the server, tagged with its experiment;
finetune, which alpha does not change, is trained once (train per method: DVC re-uses it); no run of any
experiment of the store may be left RUNNING (a worker that died mid-run, or two that raced on the store).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.dvc_repo import DVC, git_env, make_repo, run, wait_for_queue
from tests.test_dvc_tracking_server import mlflow_server  # noqa: F401 - the real server, as a fixture

pytestmark = pytest.mark.slow

ALPHAS = ("0.001", "0.1", "0.5", "1.0")


def test_four_queued_experiments_at_j4(tmp_path, mlflow_server):  # noqa: F811 - the fixture imported above
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    uri, _ = mlflow_server
    repo = tmp_path / "repo"
    env = git_env(MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true")
    make_repo(repo, env=env)
    run([DVC, "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline run"], repo, env)
    for alpha in ALPHAS:
        run([DVC, "exp", "run", "--queue", "-S", f"alpha={alpha}"], repo, env)
    t0 = time.time()
    run([DVC, "queue", "start", "-j", "4"], repo, env)
    status = wait_for_queue(repo, env, timeout=2400)
    assert status.count("Success") == 4 and "Failed" not in status, status
    print(f"\n4 queued experiments at -j 4: {time.time() - t0:.0f} s")

    client = MlflowClient(uri)
    exps = client.search_experiments(view_type=ViewType.ALL)
    runs = [r for e in exps for r in client.search_runs([e.experiment_id], run_view_type=ViewType.ALL,
                                                        max_results=1000)]
    assert [r.info.run_name for r in runs if r.info.status != "FINISHED"] == []  # none RUNNING, FAILED, KILLED
    children = [r for r in runs if r.data.tags.get("lmmreg.kind") == "child"]
    # One point per (experiment, method, seed): the baseline run has no experiment name (finetune logs alpha 0).
    per_point = Counter((r.data.tags.get("dvc.exp_name", ""), r.data.tags["lmmreg.method"], r.data.params.get("seed"))
                        for r in children)
    names = {name for name, _, _ in per_point}
    assert len(names) == 5 and "" in names, per_point  # the baseline and the four queued experiments
    assert {(n, "lmm_reg", "0") for n in names} <= set(per_point), per_point  # alpha's method: a run each, none lost
    assert ("", "finetune", "0") in per_point  # finetune ignores alpha: DVC re-uses the baseline's (train per method)
    assert set(per_point.values()) == {1}, per_point  # none twice
    lmm = sorted(float(r.data.params["alpha"]) for r in children if r.data.tags["lmmreg.method"] == "lmm_reg")
    assert lmm == sorted(float(a) for a in ("0.01", *ALPHAS))
