"""End to end on a shrunken demo: every stage's `main`, MLflow, the report and its snapshot."""

import csv
import dataclasses
import json
import shutil

import pytest
import torch

from lmmreg import report as report_lib
from lmmreg.plan import TrainPaths
from lmmreg.stages import describe, make_demo, prepare, report, train_all

pytestmark = pytest.mark.slow


def prepare_inputs(params, root, *, dataset="demo") -> TrainPaths:
    """The demo rendered, then every stage before training, in-process: the train stages' inputs."""
    raw = root / "data/raw" / dataset
    make_demo.main(params.demo, out=raw)
    return train_all.prepare_inputs(params, dataset=dataset, raw=raw, root=root)


def run_pipeline(params, root, *, dataset="demo"):
    p = prepare_inputs(params, root, dataset=dataset)
    return train_all.main(params, dataset=dataset, manifest=p.manifest, features=p.features, text=p.text,
                          centroids=p.centroids, models=root / "models" / dataset,
                          metrics=root / "metrics" / f"{dataset}.json", plots=root / "plots" / f"{dataset}.csv")


def test_pipeline_report_and_snapshot(small_params, mlflow_root, monkeypatch):
    root = mlflow_root
    summary = run_pipeline(small_params, root)
    assert set(summary) == set(small_params.train.methods)
    metrics = json.loads((root / "metrics/demo.json").read_text())["demo"]  # columns `demo.<key>` in dvc exp show
    assert set(metrics["test_acc"]) == set(small_params.train.methods)
    assert all(isinstance(v, float) for k in ("test_acc", "test_acc_std") for v in metrics[k].values())
    others = {m: a for m, a in metrics["test_acc"].items() if m not in ("lmm_reg", "finetune")}
    assert all(metrics[m] == metrics["test_acc"][m] for m in ("lmm_reg", "finetune"))
    assert metrics["best_baseline"] == max(others.values()) == others[metrics["best_is"]]
    assert json.loads((root / "models/demo/runs.json").read_text())["parent_run_id"]
    assert (root / "models/demo/methods/lmm_reg/s0.pt").is_file()
    curves = (root / "plots/demo.csv").read_text().splitlines()
    assert curves[0].split(",")[0] == "epoch" and {"finetune", "lmm_reg"} <= set(curves[0].split(","))
    assert len(curves) == 1 + small_params.train.epochs

    # A second alpha: the same configuration but for alpha, as `dvc exp run -S alpha=0.5` logs it.
    other = dataclasses.replace(small_params, alpha=0.5,
                                train=dataclasses.replace(small_params.train, methods=["lmm_reg"]))
    train_all.main(other, dataset="demo", manifest=root / "data/prepared/demo", features=root / "data/features/demo.pt",
               text=root / "data/text/demo", centroids=root / "data/centroids/demo.pt", models=root / "models/x",
               metrics=root / "metrics/x.json", plots=root / "plots/x.csv")

    out = root / "reports"
    report.main(small_params, prepared=root / "data/prepared", out=out)
    md = (out / "tables.md").read_text()
    assert "DEMO RUN: these are not the paper's numbers" in md
    for row in ("Finetuning w/o Reg. (Baseline)", "LMM-Reg.-CLIP (Proposed)", "CLIP (image emb.) [1]",
                "CLIP (image & text emb.) [14]", "CoOp [8] (reported in [8], not re-run; ViT-B/16, 16 shots, base "
                "classes (51/101)", "LaBo [10] (reported in [10], not re-run; ViT-L/14, full data", "McNemar"):
        assert row in md
    for m in report_lib.BASELINES:  # every re-run baseline has its row, marked re-run, with seeds and an interval
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {report_lib.METHOD_TITLES[m]} |"))
        assert "(re-run" in line and "(n=2)" in line and "missing" not in line
    assert ",re-run," in (out / "tables.csv").read_text()
    assert "(n=2)" in md and "missing" not in md.split("## Regime study")[0]
    ablation = md.split("alpha (the alpha ablation)")[1].split("###")[0]  # the regime study's slice along alpha
    assert "| 0.01 |" in ablation and "| 0.5 |" in ablation and "finetune" in ablation
    runs = list(csv.DictReader((out / "runs.csv").open()))
    # Every method stands at alpha = 0.5 too: LMM-Reg. with its new pair of runs, the others with their runs of the
    # current configuration (alpha plays no part in them), so only 2 run ids are new.
    n = 2 * len(small_params.train.methods)
    assert len(runs) == 2 * n and len({r["run_id"] for r in runs}) == n + 2
    at_half = {r["method"]: r["run_id"] for r in runs if json.loads(r["point"])["alpha"] == "0.5"}
    current = {r["method"]: r["run_id"] for r in runs if r["role"] == "current"}
    assert set(at_half) == set(small_params.train.methods)
    assert [m for m in at_half if at_half[m] != current[m]] == ["lmm_reg"]
    for name in ("fig2.png", "fig2.svg", "tables.csv", "tables.tex", "study/alpha.png", "study/study.csv",
                 "per_class.csv"):
        assert (out / name).stat().st_size > 0

    # Without the MLflow store, the snapshot rebuilds byte-identical tables.
    tables = {n: (out / n).read_bytes() for n in ("tables.md", "tables.csv", "tables.tex", "per_class.csv",
                                                   "study/study.csv")}
    shutil.move(out / "snapshot", root / "saved_snapshot")
    (root / "mlflow.db").unlink()
    shutil.rmtree(root / "mlartifacts")
    for n in tables:
        (out / n).unlink()
    report.main(small_params, prepared=root / "data/prepared", out=out, from_snapshot=root / "saved_snapshot")
    assert {n: (out / n).read_bytes() for n in tables} == tables

    # A store without the runs (a fresh clone after `dvc pull`): the report keeps the runs of the snapshot that DVC
    # restored instead of writing "missing" everywhere; without that snapshot it stops, naming the store.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'clone.db'}")  # an empty store, like a clone's
    report.main(small_params, prepared=root / "data/prepared", out=out)
    assert {n: (out / n).read_bytes() for n in tables} == tables
    shutil.rmtree(out / "snapshot")
    with pytest.raises(ValueError, match=r"no finished run of the current configuration in the MLflow store "
                                         r"sqlite:///.*clone\.db, nor in .*snapshot.*MLFLOW_TRACKING_URI"):
        report.main(small_params, prepared=root / "data/prepared", out=out)
    assert {n: (out / n).read_bytes() for n in tables} == tables


def test_report_names_missing_runs(small_params, mlflow_root):
    root = mlflow_root
    run_pipeline(dataclasses.replace(small_params, seeds=[0]), root)
    out = root / "reports"
    report.main(small_params, prepared=root / "data/prepared", out=out)  # params ask for seeds 0 and 1
    md = (out / "tables.md").read_text()
    assert "## Missing runs" in md and "demo/lmm_reg/seed 1" in md


def test_describe_resumes_without_redoing_work(small_params, tmp_path):
    raw, prepared = tmp_path / "raw", tmp_path / "prepared"
    make_demo.main(small_params.demo, out=raw)
    prepare.main(small_params, dataset="demo", raw=raw, out=prepared)
    store, out = tmp_path / "d/store.jsonl", tmp_path / "d/descriptions.jsonl"
    describe.main(small_params, dataset="demo", raw=raw, manifest=prepared, store=store, out=out)
    first = out.read_text()
    lines = store.read_text().splitlines()
    store.write_text("\n".join(lines[:5]) + "\n" + lines[5][:17])  # as if killed mid-write after 5 images
    describe.main(small_params, dataset="demo", raw=raw, manifest=prepared, store=store, out=out)
    assert out.read_text() == first
    describe.main(small_params, dataset="demo", raw=raw, manifest=prepared, store=store, out=out)
    records = [json.loads(x) for x in store.read_text().splitlines() if x.startswith("{") and x.endswith("}")]
    assert len({r["key"] for r in records}) == len(first.splitlines())
    assert len(records) == len(first.splitlines())  # the third run added nothing



def test_train_inputs_without_clip_are_the_same_tail_and_scale(small_params, tmp_path):
    """A method that never runs the text tower starts its tail from the features stage's `tail_init`: the very
    tensor and temperature the built CLIP gives, so no result depends on which path loaded it."""
    from lmmreg.inputs import load_inputs

    p = prepare_inputs(small_params, tmp_path)
    built, test_ids, train_ids = load_inputs(small_params, features=p.features, text=p.text, centroids=p.centroids)
    light, test_ids2, train_ids2 = load_inputs(small_params, features=p.features, text=p.text, centroids=p.centroids,
                                               need_clip=False)
    assert light.clip_model is None and light.tokenizer is None and built.clip_model is not None
    assert torch.equal(light.tail.proj, built.tail.proj) and light.tail.proj.dtype == built.tail.proj.dtype
    assert light.logit_scale == built.logit_scale
    assert (test_ids, train_ids) == (test_ids2, train_ids2)
    x = built.train_feat[:5]
    assert torch.equal(light.tail(x), built.tail(x))
    assert light.tail.state_dict().keys() == built.tail.state_dict().keys()


def test_make_demo_renders_only_where_the_demo_is_read(small_params, tmp_path):
    """The paper's setting (`datasets` without demo, no pretraining) reads no demo image: make_demo writes a note."""
    paper = dataclasses.replace(small_params, datasets=["bar"],
                                pretrain=dataclasses.replace(small_params.pretrain, enabled=False))
    assert make_demo.needed(small_params) and not make_demo.needed(paper)
    pretraining = dataclasses.replace(paper, pretrain=dataclasses.replace(paper.pretrain, enabled=True))
    assert make_demo.needed(pretraining)  # the demo CLIP's pretraining evaluates on the demo
    out = tmp_path / "demo"
    make_demo.main(paper.demo, out=out, render=make_demo.needed(paper))
    assert [p.name for p in out.iterdir()] == ["README.txt"]
    make_demo.main(small_params.demo, out=out, render=make_demo.needed(small_params))
    assert (out / "classes.json").is_file() and not (out / "README.txt").exists()
