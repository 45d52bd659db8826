"""Stage `train@<dataset>`: every method of `train.methods` for every seed, on the cached features;
one MLflow child run per (method, seed) under a parent run for the dataset, which gets the mean test
accuracy per method and the best method's classifier as a registered model (`lmmreg-<dataset>@champion`).
Under `train.shots: K` each seed trains on its own K-shot subset (lmmreg.shots), logged as `shots.json`.

    python -m lmmreg.stages.train --dataset demo --manifest data/prepared/demo --features data/features/demo.pt \
        --text data/text/demo --centroids data/centroids/demo.pt --models models/demo \
        --metrics metrics/demo.json --plots plots/demo.csv
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from lmmreg import tracking
from lmmreg.artifacts import check_aligned, load_artifact
from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params, to_dict
from lmmreg.data.manifest import load_manifest, manifest_digest
from lmmreg.describe.setting import setting_hash
from lmmreg.encoders import VisionTail, build_clip
from lmmreg.engine import budget_schedule
from lmmreg.identity import baseline_settings, method_alpha, run_identity, study_id, study_point
from lmmreg.methods import MethodInputs, get_method, run_method
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
    model, _, tokenizer = build_clip(params.clip)  # the text tower stays for prompt learning (coop)
    tail = VisionTail(model.visual, params.clip.unlocked_groups)
    test = feats.tensors["is_test"]
    f, y, m = feats.tensors["feat"], feats.labels, image_mean.tensors["mean"]
    inputs = MethodInputs(tail=tail, train_feat=f[~test], test_feat=f[test], train_y=y[~test], test_y=y[test],
                          centroids=cents.tensors["centroid"], class_text=class_text.tensors["emb"],
                          train_text_mean=m[~test], test_text_mean=m[test],
                          train_aug=feats.tensors["aug"][~test] if "aug" in feats.tensors else None,
                          classnames=list(class_text.ids), clip_model=model, tokenizer=tokenizer,
                          logit_scale=model.logit_scale.exp().item())
    split = test.tolist()
    return inputs, [i for i, t in zip(feats.ids, split, strict=True) if t], \
        [i for i, t in zip(feats.ids, split, strict=True) if not t]


def write_curves(curves: list[dict], path: Path, *, methods: list[str]) -> None:
    """Per-epoch test accuracy, mean over seeds, one column per method of `methods` trained with `train:` (for
    `dvc plots show`; zero-shot has one point, the baselines their own epoch budgets)."""
    by_method: dict[str, dict[int, list[float]]] = {}
    for c in curves:
        by_method.setdefault(c["method"], {}).setdefault(c["epoch"], []).append(c["test_acc"])
    # Evaluated epochs of the methods trained for `train.epochs` (every few epochs when a step budget stretches a
    # few-shot run); zero-shot has one point, the baselines their own budgets.
    trained = [m for m, v in by_method.items() if m in methods and len(v) > 1]
    epochs_seen = sorted(set().union(*(set(by_method[m]) for m in trained))) if trained else []
    methods = [m for m in trained if sorted(by_method[m]) == epochs_seen]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write(",".join(["epoch", *methods]) + "\n")
        for e in epochs_seen:
            f.write(",".join([str(e), *(f"{sum(by_method[m][e]) / len(by_method[m][e]):.4f}" for m in methods)]) + "\n")


# The describe settings that change answers (dvc.yaml's train params): logged with every run.
DESCRIBE_KEYS = ("backend", "model", "prompt", "n_descriptions", "temperature", "top_p", "max_new_tokens",
                 "repetition_penalty", "seed", "on_too_few", "too_few_retries")


def run_params(params: Params, dataset: str) -> dict:
    """What every run of this invocation is trained with, nested as in params.yaml (logged as `train.lr` ...)."""
    describe = to_dict(params.describe)
    return {"alpha": params.alpha, "seeds": params.seeds, "train": to_dict(params.train), "clip": to_dict(params.clip),
            "describe": {k: describe[k] for k in DESCRIBE_KEYS}, "sources": {dataset: to_dict(params.source(dataset))}}


def reg_ce_ratios(history: list[dict], alpha: float | None) -> dict[str, float]:
    """alpha * J_reg / J_ce over the first and the last evaluated epoch: how much the regulariser weighs."""
    if alpha is None or "train_reg" not in history[0]:
        return {}
    return {f"reg_ce_ratio_{name}": alpha * row["train_reg"] / row["train_ce"] if row["train_ce"] > 0 else float("nan")
            for name, row in (("first", history[0]), ("last", history[-1]))}


def log_champion(logger: tracking.RunLogger, params: Params, summary: dict, *, dataset: str, manifest: Path,
                 inputs: MethodInputs, models: Path) -> dict | None:
    """Log the best servable method's best seed as an MLflow model `lmmreg-<dataset>` (alias `champion` when its
    mean test accuracy is the best registered so far)."""
    import numpy as np

    from lmmreg import classifier

    start = time.perf_counter()
    servable = {m: s for m, s in summary.items() if m in classifier.SERVABLE}
    if not servable:
        log.warning("no method in train.methods classifies images alone (%s): no model logged", list(summary))
        return None
    method = max(servable, key=lambda m: servable[m]["test_acc_mean"])
    seed_key, best = max(servable[method]["runs"].items(), key=lambda kv: kv[1]["test_acc"])
    state_file = models / f"{method}_{seed_key}.pt"
    state = torch.load(state_file) if state_file.is_file() else None
    trainable = classifier.build_trainable(method, state_dict=state, base_tail=inputs.tail,
                                           class_text=inputs.class_text, centroids=inputs.centroids)
    model, _, _ = build_clip(params.clip)
    _, classes = load_manifest(manifest)
    meta = {"dataset": dataset, "method": method, "seed": int(seed_key[1:]), "run_id": best["run_id"],
            "test_acc": best["test_acc"], "test_acc_mean": servable[method]["test_acc_mean"]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = classifier.save_classifier(Path(tmp) / "classifier", clip=params.clip, visual=model.visual,
                                            trainable=trainable, classes=classes, meta=meta)
        example = [np.full((16, 16, 3), 128, dtype=np.uint8).tolist()]  # one grey image as [H, W, 3] uint8
        logged = logger.log_model(python_model=classifier.PyfuncClassifier(), artifacts={"classifier": str(folder)},
                                  input_example=example, pip_requirements=tracking.model_requirements(),
                                  registered_name=f"lmmreg-{dataset}", score=meta["test_acc_mean"],
                                  tags={f"lmmreg.{k}": str(v) for k, v in meta.items()})
    seconds = round(time.perf_counter() - start, 2)
    log.info("%s: %s seed %s logged as %s in %.1f s", dataset, method, meta["seed"], logged["registered"], seconds)
    return {**logged, "method": method, "seed": meta["seed"], "seconds": seconds}


def main(params: Params, *, dataset: str, manifest: Path, features: Path, text: Path, centroids: Path,
         models: Path, metrics: Path, plots: Path, device: str = "cpu", log_model: bool = True) -> dict:
    inputs, test_ids, train_ids = load_inputs(params, features=features, text=text, centroids=centroids)
    digest = manifest_digest(manifest)
    _, classes = load_manifest(manifest)
    # budget: steps gives every K the optimiser steps of the full-data run (lmmreg.engine.budget_schedule).
    cfg = params.train if params.train.budget == "epochs" else \
        dataclasses.replace(params.train, steps=total_steps(params.train, len(train_ids)))
    desc = load_artifact(text / "descriptions.pt") if params.train.shots != "all" else None
    seed_inputs: dict[int, tuple[MethodInputs, list[str]]] = {}  # the K-shot subset of each seed, for every method
    point = study_point(params)
    shared = run_params(params, dataset)
    changes = tracking.changed_params(shared, tracking.committed_params())
    # What every run of this invocation shares (the setting hash reads the imported file for `file`: once).
    shared_tags = {"lmmreg.data_digest": digest, "lmmreg.describe_setting": setting_hash(params.describe),
                   "lmmreg.study_id": study_id(params, dataset=dataset, data_digest=digest),
                   "lmmreg.point": json.dumps(point, sort_keys=True)}
    child_params = {**{k: v for k, v in shared.items() if k != "seeds"},
                    "train": {k: v for k, v in shared["train"].items() if k != "methods"}, "dataset": dataset,
                    "describe_noise": point["describe_noise"]}
    models.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    curves: list[dict] = []
    with tracking.RunLogger(dataset=dataset, params={**shared, "dataset": dataset,
                                                     "baselines": to_dict(params.baselines)}, tags=shared_tags,
                            run_name=tracking.parent_run_name(dataset, changes)) as logger:
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
                                 desc=f"{dataset} {method} s{seed}", baselines=params.baselines)
                accs = [row["test_acc"] for row in res.history]
                comp = compactness(res.final.emb.numpy(), inputs.test_y.numpy())
                engine_trained = "train" in get_method(method).settings
                final = {"final_test_acc": accs[-1], "best_test_acc": max(accs), "reported_test_acc": res.final.acc,
                         "reported_epoch": res.reported_epoch, "n_train_images": len(shot_ids),
                         "train_steps": budget_schedule(cfg, len(shot_ids))[2] if engine_trained else 0, **comp,
                         **reg_ce_ratios(res.history, method_alpha(method, params.alpha)),
                         **{f"chosen_{k}": float(v) for k, v in res.chosen.items()}}  # picked on validation
                params_ = {**child_params, "method": method, "seed": seed, "alpha": "none" if alpha is None else alpha,
                           **baseline_settings(params, method)}
                tags = {**shared_tags, "lmmreg.dataset": dataset, "lmmreg.method": method, "lmmreg.seed": str(seed),
                        "lmmreg.config_id": ident["config_id"], "lmmreg.ablation_id": ident["ablation_id"],
                        "lmmreg.alpha": ident["alpha"], "lmmreg.demo": str(params.source(dataset).layout == "demo"),
                        }
                preds = {"ids": test_ids, "labels": inputs.test_y.tolist(), "preds": res.final.preds.tolist()}
                artifacts = {"predictions.json": preds}
                if params.train.shots != "all":
                    artifacts["shots.json"] = {"shots": params.train.shots, "seed": seed, "ids": shot_ids}
                if res.state_dict:
                    artifacts["head.pt"] = res.state_dict
                    torch.save(res.state_dict, models / f"{method}_s{seed}.pt")
                run_id = logger.log_child(name=tracking.child_run_name(dataset, method, seed, alpha), params=params_,
                                          tags=tags, history=res.history, final=final, artifacts=artifacts)
                runs[f"s{seed}"] = {"run_id": run_id, "test_acc": round(res.final.acc, 4)}
                curves += [{"method": method, "seed": seed, "epoch": r["epoch"], "test_acc": r["test_acc"]}
                           for r in res.history]
                log.info("%s %s seed %d: test acc %.2f%% (epoch %d) run %s", dataset, method, seed, res.final.acc,
                         res.reported_epoch, run_id)
            mean, std = mean_std([r["test_acc"] for r in runs.values()])
            summary[method] = {"test_acc_mean": round(mean, 4), "test_acc_std": round(std, 4),
                               "config_id": ident["config_id"], "runs": runs}
            done = summary[method]
            logger.log_summary({f"{tracking.SUMMARY_METRIC}{method}": done["test_acc_mean"],
                                f"test_acc_std.{method}": done["test_acc_std"]})
        champion = log_champion(logger, params, summary, dataset=dataset, manifest=manifest, inputs=inputs,
                                models=models) if log_model else None
    # The DVC metrics file stays small so `dvc exp show` reads well; per-seed run ids go beside the heads.
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps({
        "parent_run_id": logger.parent_id,
        "test_acc": {m: s["test_acc_mean"] for m, s in summary.items()},
        "test_acc_std": {m: s["test_acc_std"] for m, s in summary.items()},
    }, indent=1) + "\n")
    (models / "runs.json").write_text(json.dumps({"parent_run_id": logger.parent_id, "methods": summary,
                                                  "model": champion}, indent=1))
    write_curves(curves, plots, methods=[m for m in params.train.methods if "train" in get_method(m).settings])
    log.info("compare the runs: %s", tracking.set_view_state(list(params.train.methods)))
    return summary


def cli() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    for name in ("manifest", "features", "text", "centroids", "models", "metrics", "plots"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-model", action="store_true",
                        help="do not log and register the best method's classifier (lmmreg-<dataset>@champion)")
    run_stage(lambda a, p: main(p, dataset=a.dataset, manifest=a.manifest, features=a.features, text=a.text,
                                centroids=a.centroids, models=a.models, metrics=a.metrics, plots=a.plots,
                                device=a.device, log_model=not a.no_model), parser)


if __name__ == "__main__":
    cli()
