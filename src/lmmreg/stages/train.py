"""Stage `train@<dataset>`: every method of `train.methods` for every seed, on the cached features;
one MLflow child run per (method, seed) under a parent run for the dataset. Under `train.shots: K` each
seed trains on its own K-shot subset (lmmreg.shots), logged as the run's `shots.json` artifact.

    python -m lmmreg.stages.train --dataset demo --manifest data/prepared/demo --features data/features/demo.pt \
        --text data/text/demo --centroids data/centroids/demo.pt --models models/demo \
        --metrics metrics/demo.json --plots plots/demo.csv
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from lmmreg import tracking
from lmmreg.artifacts import check_aligned, load_artifact
from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params, to_dict
from lmmreg.data.manifest import load_manifest, manifest_digest
from lmmreg.describe.setting import setting_hash
from lmmreg.encoders import VisionTail, build_clip
from lmmreg.engine import schedule
from lmmreg.identity import TRAINED, method_alpha, run_identity, study_id, study_point
from lmmreg.methods import MethodInputs, run_method
from lmmreg.shots import few_shot_inputs, total_steps
from lmmreg.stats import compactness, mean_std

log = logging.getLogger(__name__)


def load_inputs(params: Params, *, features: Path, text: Path,
                centroids: Path) -> tuple[MethodInputs, list[str], list[str]]:
    """The method inputs, the test image ids and the train image ids (rows in the order of the inputs)."""
    feats = load_artifact(features)
    image_mean = load_artifact(text / "image_mean.pt")
    check_aligned(feats, image_mean, names=(str(features), str(text / "image_mean.pt")))
    cents, class_text = load_artifact(centroids), load_artifact(text / "class_text.pt")
    if cents.ids != class_text.ids:
        raise ValueError(f"{centroids} and {text / 'class_text.pt'} list different classes")
    for key in ("unlocked_groups", "augment_views"):
        if feats.meta.get(key, 0) != getattr(params.clip, key):
            raise ValueError(f"{features}: cached for {key}={feats.meta.get(key)}, params say clip.{key}="
                             f"{getattr(params.clip, key)} (re-run dvc repro)")
    model, _, _ = build_clip(params.clip)
    tail = VisionTail(model.visual, params.clip.unlocked_groups)
    test = feats.tensors["is_test"]
    f, y, m = feats.tensors["feat"], feats.labels, image_mean.tensors["mean"]
    inputs = MethodInputs(tail=tail, train_feat=f[~test], test_feat=f[test], train_y=y[~test], test_y=y[test],
                          centroids=cents.tensors["centroid"], class_text=class_text.tensors["emb"],
                          train_text_mean=m[~test], test_text_mean=m[test],
                          train_aug=feats.tensors["aug"][~test] if "aug" in feats.tensors else None)
    split = test.tolist()
    return inputs, [i for i, t in zip(feats.ids, split, strict=True) if t], \
        [i for i, t in zip(feats.ids, split, strict=True) if not t]


def write_curves(curves: list[dict], path: Path) -> None:
    """Per-epoch test accuracy, mean over seeds, one column per trained method (for `dvc plots show`)."""
    by_method: dict[str, dict[int, list[float]]] = {}
    for c in curves:
        by_method.setdefault(c["method"], {}).setdefault(c["epoch"], []).append(c["test_acc"])
    # Evaluated epochs: 1..epochs, or every few epochs when a step budget stretches a few-shot run.
    epochs = sorted(max((set(v) for v in by_method.values()), key=len, default=set()))
    methods = [m for m, v in by_method.items() if sorted(v) == epochs and len(epochs) > 1]  # zero-shot: one point
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write(",".join(["epoch", *methods]) + "\n")
        for e in epochs:
            f.write(",".join([str(e), *(f"{sum(by_method[m][e]) / len(by_method[m][e]):.4f}" for m in methods)]) + "\n")


def reg_ce_ratios(history: list[dict], alpha: float | None) -> dict[str, float]:
    """alpha * J_reg / J_ce over the first and the last evaluated epoch: how much the regulariser weighs."""
    if alpha is None or "train_reg" not in history[0]:
        return {}
    return {f"reg_ce_ratio_{name}": alpha * row["train_reg"] / row["train_ce"] if row["train_ce"] > 0 else float("nan")
            for name, row in (("first", history[0]), ("last", history[-1]))}


def main(params: Params, *, dataset: str, manifest: Path, features: Path, text: Path, centroids: Path,
         models: Path, metrics: Path, plots: Path, device: str = "cpu") -> dict:
    inputs, test_ids, train_ids = load_inputs(params, features=features, text=text, centroids=centroids)
    digest = manifest_digest(manifest)
    _, classes = load_manifest(manifest)
    # budget: steps gives every K the optimiser steps of the full-data run (lmmreg.engine.schedule).
    cfg = params.train if params.train.budget == "epochs" else \
        dataclasses.replace(params.train, steps=total_steps(params.train, len(train_ids)))
    desc = load_artifact(text / "descriptions.pt") if params.train.shots != "all" else None
    seed_inputs: dict[int, tuple[MethodInputs, list[str]]] = {}  # the K-shot subset of each seed, for every method
    point = study_point(params)
    logger = tracking.RunLogger(dataset=dataset, params={"dataset": dataset, "alpha": params.alpha,
                                "seeds": params.seeds, "train": to_dict(params.train), "clip": to_dict(params.clip)},
                                tags={"lmmreg.data_digest": digest})
    models.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    curves: list[dict] = []
    # What every run of this invocation shares (the setting hash reads the imported file for `file`: once).
    train_params = {k: v for k, v in to_dict(params.train).items() if k != "methods"}
    shared_params = {"dataset": dataset, **train_params, "clip_model": params.clip.model,
                     "clip_pretrained": params.clip.pretrained or "random-init",
                     "unlocked_groups": params.clip.unlocked_groups, "lmm_backend": params.describe.backend,
                     "lmm_model": params.describe.model, "lmm_prompt": params.describe.prompt,
                     "describe_setting": setting_hash(params.describe), "data_digest": digest,
                     "describe_noise": point["describe_noise"], "n_descriptions": params.describe.n_descriptions}
    study_tags = {"lmmreg.study_id": study_id(params, dataset=dataset, data_digest=digest),
                  "lmmreg.point": json.dumps(point, sort_keys=True)}
    try:
        for method in params.train.methods:
            ident = run_identity(params, dataset=dataset, method=method, data_digest=digest)
            alpha = method_alpha(method, params.alpha)
            runs = {}
            for seed in params.seeds:
                if seed not in seed_inputs:
                    seed_inputs[seed] = few_shot_inputs(inputs, params.train, seed=seed, train_ids=train_ids,
                                                        desc=desc, classes=classes)
                inp, shot_ids = seed_inputs[seed]
                res = run_method(method, inp, alpha=params.alpha, cfg=cfg, seed=seed, device=device,
                                 desc=f"{dataset} {method} s{seed}")
                accs = [row["test_acc"] for row in res.history]
                comp = compactness(res.final.emb.numpy(), inputs.test_y.numpy())
                final = {"final_test_acc": accs[-1], "best_test_acc": max(accs), "reported_test_acc": res.final.acc,
                         "reported_epoch": res.reported_epoch, "n_train_images": len(shot_ids),
                         "train_steps": schedule(cfg, len(shot_ids))[2] if method in TRAINED else 0, **comp,
                         **reg_ce_ratios(res.history, method_alpha(method, params.alpha))}
                run_params = {**shared_params, "method": method, "seed": seed,
                              "alpha": "none" if alpha is None else alpha}
                tags = {"lmmreg.dataset": dataset, "lmmreg.method": method, "lmmreg.seed": str(seed),
                        "lmmreg.config_id": ident["config_id"], "lmmreg.ablation_id": ident["ablation_id"],
                        "lmmreg.alpha": ident["alpha"], "lmmreg.demo": str(params.source(dataset).layout == "demo"),
                        **study_tags}
                preds = {"ids": test_ids, "labels": inputs.test_y.tolist(), "preds": res.final.preds.tolist()}
                artifacts = {"predictions.json": preds}
                if params.train.shots != "all":
                    artifacts["shots.json"] = {"shots": params.train.shots, "seed": seed, "ids": shot_ids}
                if res.state_dict:
                    artifacts["head.pt"] = res.state_dict
                    torch.save(res.state_dict, models / f"{method}_s{seed}.pt")
                run_id = logger.log_child(name=f"{dataset}/{method}/s{seed}", params=run_params, tags=tags,
                                          history=res.history, final=final, artifacts=artifacts)
                runs[f"s{seed}"] = {"run_id": run_id, "test_acc": round(res.final.acc, 4)}
                curves += [{"method": method, "seed": seed, "epoch": r["epoch"], "test_acc": r["test_acc"]}
                           for r in res.history]
                log.info("%s %s seed %d: test acc %.2f%% (epoch %d) run %s", dataset, method, seed, res.final.acc,
                         res.reported_epoch, run_id)
            mean, std = mean_std([r["test_acc"] for r in runs.values()])
            summary[method] = {"test_acc_mean": round(mean, 4), "test_acc_std": round(std, 4),
                               "config_id": ident["config_id"], "runs": runs}
    except BaseException:
        logger.close("FAILED")
        raise
    logger.close()
    # The DVC metrics file stays small so `dvc exp show` reads well; per-seed run ids go beside the heads.
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps({
        "parent_run_id": logger.parent_id,
        "test_acc": {m: s["test_acc_mean"] for m, s in summary.items()},
        "test_acc_std": {m: s["test_acc_std"] for m, s in summary.items()},
    }, indent=1) + "\n")
    (models / "runs.json").write_text(json.dumps({"parent_run_id": logger.parent_id, "methods": summary}, indent=1))
    write_curves(curves, plots)
    return summary


def cli() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    for name in ("manifest", "features", "text", "centroids", "models", "metrics", "plots"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run_stage(lambda a, p: main(p, dataset=a.dataset, manifest=a.manifest, features=a.features, text=a.text,
                                centroids=a.centroids, models=a.models, metrics=a.metrics, plots=a.plots,
                                device=a.device), parser)


if __name__ == "__main__":
    cli()
