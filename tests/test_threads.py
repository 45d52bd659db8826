"""A stage's share of the cores (lmmreg.threads), and the train stage's seeds giving the same numbers whether they
run in one process or side by side in several."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from lmmreg import seed_pool, threads
from lmmreg.config import parse_params
from lmmreg.stages import plan, train
from tests.conftest import small_raw_params
from tests.test_pipeline import prepare_inputs


def _fake_proc(root, cmdlines: list[list[str]]):
    for pid, argv in enumerate(cmdlines, start=100):
        (root / str(pid)).mkdir()
        (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (root / "self").mkdir()  # not a pid: ignored
    return root


def test_running_experiments_counts_dvc_exec_run_processes(tmp_path):
    proc = _fake_proc(tmp_path, [
        ["/venv/bin/python", "/venv/bin/dvc", "exp", "exec-run", "--infofile", "a.run"],
        ["/venv/bin/python", "/venv/bin/dvc", "exp", "exec-run", "--infofile", "b.run"],
        ["/venv/bin/python", "/venv/bin/dvc", "exp", "queue-worker", "dvc-exp-1"],  # a worker, not an experiment
        ["bin/python", "-m", "lmmreg.stages.train"],
    ])
    assert threads.running_experiments(proc) == 2


def test_budget_is_cores_over_jobs(monkeypatch):
    monkeypatch.delenv("LMMREG_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 8)
    monkeypatch.setenv("LMMREG_JOBS", "2")
    assert threads.budget() == 4
    monkeypatch.setenv("LMMREG_JOBS", "16")
    assert threads.budget() == 1  # never below one
    monkeypatch.delenv("LMMREG_JOBS")
    monkeypatch.setattr(threads, "running_experiments", lambda: 4)  # `dvc queue start -j 4`
    assert threads.budget() == 2
    monkeypatch.setattr(threads, "running_experiments", lambda: 0)  # plain `dvc repro`
    assert threads.budget() == 8
    monkeypatch.setenv("LMMREG_THREADS", "3")
    assert threads.budget() == 3
    monkeypatch.setenv("LMMREG_JOBS", "two")
    monkeypatch.delenv("LMMREG_THREADS")
    with pytest.raises(ValueError, match="LMMREG_JOBS='two'"):
        threads.budget()


def test_configure_holds_torch_and_child_processes(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert threads.configure(1) == 1
        assert torch.get_num_threads() == 1
        import os

        assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["LMMREG_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def test_workers_share_the_cores_and_all_seeds_run_at_once_where_that_is_sooner(monkeypatch):
    params = parse_params(small_raw_params(seeds=[0, 1, 2]))
    cases = {  # (cores, seeds) -> processes
        (1, 3): 1,  # a queued sweep's share: one process, seeds one after another
        (2, 1): 1, (2, 2): 2, (2, 3): 3, (2, 4): 2, (2, 5): 2,  # 3 seeds on 2 cores: 1.5 seed-times, not 2 rounds
        (4, 3): 3, (4, 6): 6, (4, 7): 7, (4, 8): 4, (4, 9): 4,  # rounds that fill the cores stay rounds
    }
    for (cores, n_seeds), expected in cases.items():
        monkeypatch.setenv("LMMREG_THREADS", str(cores))
        p = dataclasses.replace(params, seeds=list(range(n_seeds)))
        assert seed_pool.workers_for(p, "lmm_reg", "cpu") == expected, (cores, n_seeds)
    monkeypatch.setenv("LMMREG_THREADS", "2")
    assert seed_pool.workers_for(params, "lmm_reg", "cuda") == 1  # one GPU process
    assert seed_pool.workers_for(params, "zero_shot", "cpu") == 1  # training-free: milliseconds per seed


@pytest.mark.slow
def test_seeds_give_the_same_numbers_in_one_process_or_several(mlflow_root, monkeypatch):
    root = mlflow_root
    raw = small_raw_params(seeds=[0, 1, 2])
    params = parse_params(raw)
    paths = prepare_inputs(params, root)
    results = {}
    monkeypatch.setattr(seed_pool, "HELPER_START_S", 0.0)  # a helper even for this small problem's fast seeds
    # one process; this process and a helper per spare core (and a third process if the first seed outlasts the
    # helper's start); three processes, helpers forked from the fork server
    for n in ("1", "2", "3"):
        monkeypatch.setenv("LMMREG_THREADS", n)
        plan.main(params, dataset="demo", paths=paths, out=root / f"plan{n}")
        out = root / f"out{n}"
        res = train.main(params, dataset="demo", method="lmm_reg", plan=root / f"plan{n}/lmm_reg.json", paths=paths,
                         out=out)
        assert res["workers"] in {"1": (1,), "2": (2, 3), "3": (3,)}[n]
        results[n] = (res, {s: torch.load(out / f"s{s}.pt") for s in params.seeds})
    one, heads1 = results["1"]
    for n in ("2", "3"):
        other, heads = results[n]
        for key in ("s0", "s1", "s2"):
            assert one["runs"][key]["history"] == other["runs"][key]["history"]
            assert one["runs"][key]["test_acc"] == other["runs"][key]["test_acc"]
        for s in params.seeds:
            assert heads1[s].keys() == heads[s].keys()
            assert all(torch.equal(heads1[s][k], heads[s][k]) for k in heads1[s])
    assert json.loads((root / "out3/result.json").read_text())["workers"] == 3

    # A seed faster than a helper's start-up: the stage keeps all seeds in its own process, same numbers again.
    monkeypatch.setattr(seed_pool, "HELPER_START_S", 1e9)
    res = train.main(params, dataset="demo", method="lmm_reg", plan=root / "plan2/lmm_reg.json", paths=paths,
                     out=root / "out3")
    assert res["workers"] == 1
    assert all(res["runs"][k]["test_acc"] == one["runs"][k]["test_acc"] for k in ("s0", "s1", "s2"))
