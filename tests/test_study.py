"""The regime study on a hand-built snapshot whose answer is known: accuracies, Δ, McNemar, the fidelity line,
and the same tables again from the snapshot files."""

import json
import math
from pathlib import Path

import pytest

from lmmreg.config import parse_params
from lmmreg.identity import study_point
from lmmreg.report import Snapshot, read_snapshot, write_snapshot
from lmmreg.report.study import fidelity, slice_rows, study_slices, varying
from lmmreg.report.study_answer import study_answer
from lmmreg.report.study_section import study_markdown, write_study
from tests.conftest import small_raw_params

N_TEST = 20
N_CLASSES = 4


@pytest.fixture
def params():
    return parse_params(small_raw_params(**{"report.bootstrap": 200}))


def _snapshot(params) -> Snapshot:
    """Two seeds per cell; a method at a point is right on its first `k` test images (accuracy 5k %).

    shots slice (alpha 0.01): zero_shot 60 %, linear_probe 40 / 80 / 90 % at 1 / 2 / all shots, finetune 50 %,
    lmm_reg 70 % (Δ = +20: lmm_reg right on 4 images finetune gets wrong, never the reverse).
    alpha slice (shots all): lmm_reg at alpha 1.0 is 30 % (Δ = -20)."""
    base = study_point(params)
    plan = {  # (alpha, shots): {method: images right}
        ("0.01", "1"): {"zero_shot": 12, "linear_probe": 8, "finetune": 10, "lmm_reg": 14},
        ("0.01", "2"): {"zero_shot": 12, "linear_probe": 16, "finetune": 10, "lmm_reg": 14},
        ("0.01", "all"): {"zero_shot": 12, "linear_probe": 18, "finetune": 10, "lmm_reg": 14},
        ("1.0", "all"): {"zero_shot": 12, "linear_probe": 18, "finetune": 10, "lmm_reg": 6},
    }
    runs, preds, hist = [], {}, {}
    labels = [i % N_CLASSES for i in range(N_TEST)]
    for (alpha, shots), methods in plan.items():
        point = {**base, "alpha": alpha, "shots": shots}
        role = "current" if point == base else "study"
        for method, k in methods.items():
            for seed in (0, 1):
                rid = f"{method}-{alpha}-{shots}-s{seed}"
                p = [y if i < k else (y + 1) % N_CLASSES for i, y in enumerate(labels)]
                preds[rid] = {"ids": [f"t{i}" for i in range(N_TEST)], "labels": labels, "preds": p}
                hist[rid] = [(1, 5.0 * k)]
                runs.append({"dataset": "demo", "method": method, "seed": seed, "alpha": alpha, "role": role,
                             "run_id": rid, "config_id": f"c-{method}-{alpha}-{shots}", "ablation_id": "a",
                             "reported_test_acc": 5.0 * k, "final_test_acc": 5.0 * k, "best_test_acc": 5.0 * k,
                             "reported_epoch": 1, "intra_inter_ratio": 0.5, "silhouette": 0.1, "demo": "True",
                             "point": json.dumps(point, sort_keys=True),
                             "n_train_images": N_CLASSES * (int(shots) if shots != "all" else 8), "train_steps": 30,
                             "reg_ce_ratio_first": 2.0 if method == "lmm_reg" else math.nan,
                             "reg_ce_ratio_last": 1.0 if method == "lmm_reg" else math.nan})
    return Snapshot(runs, hist, preds, [])


def _by(rows, value, method):
    (r,) = [r for r in rows if r["value"] == value and r["method"] == method]
    return r


def test_study_tables_have_the_known_answer(params):
    snap = _snapshot(params)
    current = study_point(params)
    assert varying(snap, "demo") == ["alpha", "shots"]

    (shots,) = study_slices(snap, "demo", "shots", current)  # alpha 1.0 has a single shots value: no slice
    assert shots.current and shots.values == ["1", "2", "all"]
    rows = slice_rows(snap, shots, params)
    assert _by(rows, "2", "linear_probe")["mean"] == pytest.approx(80.0)
    assert _by(rows, "1", "zero_shot")["mean"] == pytest.approx(60.0) and _by(rows, "1", "zero_shot")["n"] == 2
    assert _by(rows, "all", "lmm_reg")["reg_ce_first"] == 2.0 and _by(rows, "all", "lmm_reg")["reg_ce_last"] == 1.0
    lm = _by(rows, "all", "lmm_reg")
    assert lm["ci_lo"] <= 70.0 <= lm["ci_hi"]
    d = _by(rows, "all", "delta")
    assert d["mean"] == pytest.approx(20.0) and d["n"] == 2
    assert 0 < d["ci_lo"] <= 20.0 <= d["ci_hi"]  # 4 of 20 images flip, always in lmm_reg's favour
    # Clustered McNemar: 4 discordant images, each favouring lmm_reg on both seeds; of the 2^4 sign patterns over
    # images, 2 are as extreme (the pooled test, counting 8 independent pairs, would say 2 * 0.5 ** 8).
    assert d["mcnemar_p"] == pytest.approx(2 / 2 ** 4)

    # Linear probe 40 % at 1 shot, 80 % at 2: it reaches zero-shot's 60 % half-way in log2, at sqrt(2) shots.
    fid = fidelity(rows, N_CLASSES)
    assert fid["zero_shot"] == pytest.approx(60.0) and fid["k"] == pytest.approx(math.sqrt(2))

    alpha_slices = study_slices(snap, "demo", "alpha", current)
    assert [s.values for s in alpha_slices] == [["0.01", "1.0"]]
    arows = slice_rows(snap, alpha_slices[0], params)
    assert _by(arows, "1.0", "delta")["mean"] == pytest.approx(-20.0)
    assert _by(arows, "1.0", "finetune")["mean"] == pytest.approx(50.0)  # the baseline has no alpha: flat

    note = study_answer(snap, "demo", params)
    assert "over 4 study points" in note and "uncorrected (each point at p < 0.05): beats at 3, loses at 1" in note
    assert "Holm-corrected" in note and "Δ = -20.00" in note and "alpha = 1.0" in note


def test_study_markdown_and_files_rebuild_from_the_snapshot(params, tmp_path):
    snap = _snapshot(params)
    classes = {"demo": [f"c{i}" for i in range(N_CLASSES)]}
    md = "\n".join(study_markdown(snap, params, classes))
    assert "### Demo (synthetic): shots per class, at the current configuration" in md
    assert "### Demo (synthetic): alpha (the alpha ablation), at the current configuration" in md
    assert "| 2 | 60.00 ± 0.00" in md and "(n=2)" in md
    assert "+20.00 [" in md and "2 → 1" not in md and "2.000 → 1.000" in md
    assert "at ≈ 1.4 shots per class" in md
    assert "| Demo (synthetic) | lmm_reg | 2.000 | 1.000 |" in md  # the current configuration's reg/CE
    write_study(snap, params, classes, tmp_path / "a")
    assert (tmp_path / "a/shots.png").stat().st_size > 0 and (tmp_path / "a/alpha.png").stat().st_size > 0
    write_snapshot(snap, tmp_path / "snap")
    again = read_snapshot(tmp_path / "snap")
    assert "\n".join(study_markdown(again, params, classes)) == md
    write_study(again, params, classes, tmp_path / "b")
    assert (tmp_path / "a/study.csv").read_bytes() == (tmp_path / "b/study.csv").read_bytes()


def test_no_varying_variable_says_how_to_run_the_study(params):
    snap = _snapshot(params)
    snap.runs = [r for r in snap.runs if r["role"] == "current"]
    md = "\n".join(study_markdown(snap, params, {"demo": []}))
    assert "No study variable varies" in md and "make study" in md


def test_the_default_study_grid_covers_the_regime_study():
    """configs/study.yaml (what `make study` runs): every K at full params, noise and alpha at full data and at
    4 shots, normalize x reg_reduction and the head initialisations at both."""
    import importlib.util

    from tests.conftest import REPO, load_raw_params

    spec = importlib.util.spec_from_file_location("bench_study", REPO / "benchmarks/bench_study.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    raw = load_raw_params()
    points, keys = bench.expand(REPO / "configs/study.yaml", raw, reduced=False)
    base = {k: bench._get(raw, k) for k in keys}
    seen = [base, *points]

    def has(**want) -> bool:
        want = {k.replace("__", "."): v for k, v in want.items()}
        return any(all(p[k] == v for k, v in want.items()) for p in seen)

    for k in (1, 2, 4, 8, 16, "all"):
        assert has(train__shots=k, alpha=base["alpha"], describe__options__noise=base["describe.options.noise"])
    for shots in (4, "all"):
        for noise in (0.0, 0.15, 0.5, 1.0):
            assert has(train__shots=shots, describe__options__noise=noise, alpha=base["alpha"])
        for alpha in (0.001, 0.01, 0.1, 1.0):
            assert has(train__shots=shots, alpha=alpha, describe__options__noise=base["describe.options.noise"])
        for normalize in (False, True):
            for red in ("sum", "mean"):
                assert has(train__shots=shots, train__normalize=normalize, train__reg_reduction=red)
        for init in ("random", "class_text", "centroids"):
            assert has(train__shots=shots, train__head_init=init)
    assert len({json.dumps(p, sort_keys=True) for p in points}) == len(points) and base not in points
    noise = [p["describe.options.noise"] for p in points]  # ordered by noise: the LMM is asked once per value
    assert noise == sorted(noise, key=[base["describe.options.noise"], *dict.fromkeys(noise)].index)


def test_the_queue_runs_the_costliest_points_first_and_after_what_they_reuse():
    """bench_study.schedule: every point once; costs never rise along the queue; the points that re-train every
    method (the shots) come first, one giving the 4-shot runs ahead of them, so the 4-shot variations that reuse
    those runs come later; and a point that re-trains LMM-Reg. alone counts one run."""
    import importlib.util

    from tests.conftest import REPO, load_raw_params

    spec = importlib.util.spec_from_file_location("bench_study", REPO / "benchmarks/bench_study.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    raw = load_raw_params()
    points, _ = bench.expand(REPO / "configs/study.yaml", raw, reduced=False)
    order = bench.schedule(points, raw)
    assert sorted(json.dumps(p, sort_keys=True) for p, _ in order) == sorted(json.dumps(p, sort_keys=True)
                                                                          for p in points)
    costs = [c for _, c in order]
    assert costs == sorted(costs, reverse=True)
    n_methods = len(raw["train"]["methods"]) - 1  # zero-shot reads no shots
    first = [p for p, c in order if c >= n_methods]
    assert {p["train.shots"] for p in first} == {1, 2, 4, 8, 16} and first[0]["train.shots"] == 4
    by_label = {json.dumps({k: v for k, v in p.items() if v != bench._get(raw, k)}, sort_keys=True): c
                for p, c in order}
    assert by_label[json.dumps({"alpha": 0.1})] == 1 and by_label[json.dumps({"alpha": 0.1, "train.shots": 4},
                                                                                sort_keys=True)] == 1


def test_starting_the_queue_does_not_wait_for_the_workers(tmp_path, monkeypatch):
    """bench_repro.start_workers (make study's and the sweep's) returns once `dvc queue start` has, although the
    workers it leaves behind keep its stdout and stderr open (as DVC's daemonised workers do): a stand-in `dvc` that
    forks a 30-s sleeper holding them. A failing start names its output."""
    import importlib.util
    import os
    import time

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("bench_repro", REPO / "benchmarks/bench_repro.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    fake = tmp_path / "bin" / "dvc"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "starting $*"\nsleep 30 &\n[ "$3" = "-j" ] && [ "$4" = "9" ] && exit 3\nexit 0\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    t = time.monotonic()
    bench.start_workers(2, env, tmp_path)
    assert time.monotonic() - t < 10  # through a pipe it would wait out the 30-s sleeper
    with pytest.raises(SystemExit, match=r"dvc queue start -j 9 failed \(exit 3\):\nstarting queue start -j 9"):
        bench.start_workers(9, env, tmp_path)


@pytest.mark.parametrize("unclaimed", [2, 0])
def test_a_worker_that_stops_with_tasks_unclaimed_is_restarted(tmp_path, monkeypatch, unclaimed):
    """bench_repro.wait_for_queue(restart=...): a worker log's last line ("done") while task messages wait in the
    broker calls `restart` once; with none waiting (the queue is just draining) it does not."""
    import importlib.util
    import types

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("bench_repro", REPO / "benchmarks/bench_repro.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    celery = tmp_path / ".dvc/tmp/exps/celery"
    (celery / "broker/in").mkdir(parents=True)
    (celery / "broker/in/1_a.dvc-exp-1@localhost.celery.pidbox.msg").write_text("{}")
    for i in range(unclaimed):
        (celery / f"broker/in/{i}_task.celery.msg").write_text("{}")
    logs = [celery / "dvc-exp-worker-1.out", celery / "dvc-exp-worker-2.out"]
    for log in logs:
        log.write_text("[2026-12-06 21:54:11,185: INFO/MainProcess] ready.\n")
    end = ("[2026-12-06 22:17:53,269: INFO/MainProcess] Task dvc.repo.experiments.queue.tasks.run_exp[d059] "
           "succeeded in 4.0s: None\n")
    crash = ("[2026-12-06 22:17:59,556: CRITICAL/MainProcess] Unrecoverable error: JSONDecodeError\n"
             "[2026-12-06 22:18:18,798: INFO/MainProcess] done\n")

    def append(log, text):
        return lambda: log.write_text(log.read_text() + text)

    def drain():
        for f in (celery / "broker/in").glob("*_task.celery.msg"):
            f.unlink()
        append(logs[1], end * 2)()

    steps = [append(logs[0], end), append(logs[0], crash), lambda: None, drain]
    monkeypatch.setattr(bench.time, "sleep", lambda s: steps.pop(0)())
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: types.SimpleNamespace(stdout="abc  Success\n"))
    restarts = []
    assert "Success" in bench.wait_for_queue(tmp_path, {}, expected=3, restart=lambda: restarts.append(1))
    assert restarts == ([1] if unclaimed else []) and not steps


# ------------------------------------------------ a method's runs at every point where its configuration is theirs

def test_at_point_inverts_study_point(params):
    from lmmreg.identity import at_point

    base = study_point(params)
    assert at_point(params, base) == params
    for change in ({"alpha": "0.1"}, {"shots": "4", "centroids_from": "train"}, {"describe_noise": "1.0"},
                   {"normalize": "true", "reg_reduction": "mean"}, {"head_init": "centroids"},
                   {"n_descriptions": "5"}, {"shots": "1", "alpha": "1.0", "describe_noise": "0.0"}):
        point = {**base, **change}
        assert study_point(at_point(params, point)) == point, change
    # A point written before a variable existed keeps the params' value for it.
    assert at_point(params, {"alpha": "0.1"}) == at_point(params, {**base, "alpha": "0.1"})


def test_a_reused_run_stands_at_every_point_its_method_ignores(params, monkeypatch):
    """Incremental training re-trains at alpha = 0.1 LMM-Reg. alone: fine-tuning's runs from the baseline are its
    runs there too (same config_id), so the point's Δ is paired; at a shots point both were re-trained."""
    from lmmreg import tracking
    from lmmreg.identity import at_point, run_identity, study_id
    from lmmreg.report.snapshot import collect_snapshot

    params = parse_params(small_raw_params(**{"train.methods": ["zero_shot", "finetune", "lmm_reg"]}))
    monkeypatch.setattr("lmmreg.data.manifest.manifest_digest", lambda _: "digest")
    sid = study_id(params, dataset="demo", data_digest="digest")
    base = study_point(params)
    trained = {  # point change -> the methods incremental training re-ran there
        (): ("zero_shot", "finetune", "lmm_reg"), (("alpha", "0.1"),): ("lmm_reg",),
        (("shots", "2"),): ("finetune", "lmm_reg")}
    runs, t = [], 0
    for change, methods in trained.items():
        point = {**base, **dict(change)}
        at = at_point(params, point)
        for m in methods:
            for seed in params.seeds:
                t += 1
                runs.append({"run_id": f"{m}{dict(change)}s{seed}", "start_time": t, "params": {}, "metrics": {},
                             "tags": {"lmmreg.dataset": "demo", "lmmreg.method": m, "lmmreg.seed": str(seed),
                                      "lmmreg.study_id": sid, "lmmreg.point": json.dumps(point, sort_keys=True),
                                      "lmmreg.alpha": "x", "lmmreg.ablation_id": "a", **{
                                          f"lmmreg.{k}": v for k, v in run_identity(
                                              at, dataset="demo", method=m, data_digest="digest").items()
                                          if k == "config_id"}}})
    runs.reverse()  # newest first, as MLflow answers

    def search(filters):
        return [r for r in runs if all(r["tags"].get(k) == v for k, v in filters.items())]

    monkeypatch.setattr(tracking, "search_child_runs", search)
    monkeypatch.setattr(tracking, "metric_history", lambda rid, key: [(1, 50.0)])
    monkeypatch.setattr(tracking, "load_json_artifact", lambda rid, name, **kw: {"ids": [], "labels": [], "preds": []})
    snap = collect_snapshot(params, prepared=Path("unused"))
    at = {}
    for r in snap.runs:
        at.setdefault(tuple(sorted(set(json.loads(r["point"]).items()) - set(base.items()))), {}).setdefault(
            r["method"], set()).add(r["run_id"])
    alpha, shots = (("alpha", "0.1"),), (("shots", "2"),)
    # alpha 0.1: LMM-Reg.'s own runs; fine-tuning and zero-shot are the baseline's, reused
    assert at[alpha] == {"lmm_reg": {"lmm_reg{'alpha': '0.1'}s0", "lmm_reg{'alpha': '0.1'}s1"},
                         "finetune": {"finetune{}s0", "finetune{}s1"}, "zero_shot": {"zero_shot{}s0", "zero_shot{}s1"}}
    # shots 2: both trained methods re-trained there; zero-shot (no training) is the baseline's
    assert at[shots]["finetune"] == {"finetune{'shots': '2'}s0", "finetune{'shots': '2'}s1"}
    assert at[shots]["zero_shot"] == {"zero_shot{}s0", "zero_shot{}s1"}
    assert set(at) == {(), alpha, shots} and not snap.missing
    # each run's curve and predictions fetched once, however many points it stands at
    assert len(snap.predictions) == len({r["run_id"] for r in runs})


def test_the_study_opens_with_what_the_target_contributes(params):
    """A reg_target block (the runs of the paper's target name none: POINT_DEFAULTS): one row per target, Δ
    against fine-tuning at the same point; finetune's runs are the same at every target."""
    base = study_point(params)
    assert "reg_target" not in base
    runs, preds, hist = [], {}, {}
    labels = [i % N_CLASSES for i in range(N_TEST)]
    right = {"lmm": 16, "class_prompt": 16, "shuffled": 8, "finetune": 10}
    for target, k in right.items():
        method = "finetune" if target == "finetune" else "lmm_reg"
        point = base if target in ("lmm", "finetune") else {**base, "reg_target": target}
        for seed in (0, 1):
            rid = f"{target}-s{seed}"
            preds[rid] = {"ids": [f"t{i}" for i in range(N_TEST)], "labels": labels,
                          "preds": [y if i < k else (y + 1) % N_CLASSES for i, y in enumerate(labels)]}
            hist[rid] = [(1, 5.0 * k)]
            runs.append({"dataset": "demo", "method": method, "seed": seed, "alpha": "0.01",
                         "role": "current" if point == base else "study", "run_id": rid, "config_id": f"c-{target}",
                         "ablation_id": "a", "reported_test_acc": 5.0 * k, "final_test_acc": 5.0 * k,
                         "best_test_acc": 5.0 * k, "reported_epoch": 1, "intra_inter_ratio": 0.5, "silhouette": 0.1,
                         "demo": "True", "point": json.dumps(point, sort_keys=True), "n_train_images": 32,
                         "train_steps": 30, "reg_ce_ratio_first": math.nan, "reg_ce_ratio_last": math.nan})
    # fine-tuning ignores the target: its runs stand at the control points too (as incremental training reuses them)
    runs += [{**r, "role": "study", "point": json.dumps({**base, "reg_target": t}, sort_keys=True)}
             for r in list(runs) if r["method"] == "finetune" for t in ("class_prompt", "shuffled")]
    md = "\n".join(study_markdown(Snapshot(runs, hist, preds, []), params, {"demo": list("abcd")}))
    section = md.split("**What the target contributes on")[1].split("\n\n", 2)[2].split("\n\n")[0]
    lines = section.splitlines()
    assert lines[0].startswith("| J_reg target | LMM-Reg. | fine-tuning | Δ")
    body = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert list(body) == ["LMM centroids (Eq. 1, the paper)", "class-prompt embeddings (no LMM)",
                          "LMM centroids of another class"]
    assert "| +30.00 [" in body["LMM centroids (Eq. 1, the paper)"]  # 80 % against 50 %
    assert "| +30.00 [" in body["class-prompt embeddings (no LMM)"] and "| -10.00 [" in body[
        "LMM centroids of another class"]
    assert md.index("What the target contributes") < md.index("Runs of this configuration")  # it opens the section
