"""Stage `summarize@<dataset>`: the dataset's results across the methods of `train.methods`, after their train
stages (fresh or restored by DVC). One MLflow parent run per invocation carries the mean test accuracy of every
method (`test_acc.<method>`), adopts the runs this invocation trained and tags the ones it reused unchanged
(`lmmreg.reused_runs`); the best servable method is logged as a registered model (`lmmreg-<dataset>@champion`)
when it is at least as good as the champion so far.

    python -m lmmreg.stages.summarize --dataset demo --manifest data/prepared/demo --features data/features/demo.pt \
        --text data/text/demo --centroids data/centroids/demo.pt --methods models/demo/methods \
        --runs models/demo/runs.json --metrics metrics/demo.json --plots plots/demo.csv

Outputs: `metrics/<dataset>.json` (DVC metrics, numbers and names only, see `dvc_metrics`), `models/<dataset>/runs.json`
(run ids, the parent and the logged model) and `plots/<dataset>.csv` (test accuracy per epoch, mean over seeds).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from lmmreg import tracking
from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params, to_dict
from lmmreg.data.manifest import load_manifest, manifest_digest
from lmmreg.errors import InputError
from lmmreg.inputs import load_inputs
from lmmreg.methods import get_method
from lmmreg.plan import TrainPaths
from lmmreg.run_metadata import dataset_tags, run_params

log = logging.getLogger(__name__)


def load_results(methods_dir: Path, methods: list[str]) -> dict[str, dict]:
    """Each method's `result.json`, in `train.methods` order; a missing one names its stage."""
    out = {}
    for m in methods:
        path = methods_dir / m / "result.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no result for method {m!r} (run `dvc repro train@<dataset>-{m}`)")
        out[m] = json.loads(path.read_text())
    return out


def write_curves(results: dict[str, dict], path: Path, *, methods: list[str]) -> None:
    """Per-epoch test accuracy, mean over seeds, one column per method of `methods` trained with `train:` (for
    `dvc plots show`; zero-shot has one point, the baselines their own epoch budgets)."""
    by_method: dict[str, dict[int, list[float]]] = {}
    for m, res in results.items():
        for run in res["runs"].values():
            for row in run["history"]:
                by_method.setdefault(m, {}).setdefault(row["epoch"], []).append(row["test_acc"])
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


# The headline of `dvc exp show`: the proposed method, its own baseline (the same training at α = 0), and the best
# of every other method of train.methods.
PROPOSED, BASELINE = "lmm_reg", "finetune"


def dvc_metrics(dataset: str, summary: dict[str, dict]) -> dict:
    """`metrics/<dataset>.json`: everything under the dataset's name, so the columns of `dvc exp show` are
    `<dataset>.lmm_reg` ... and never collide across datasets. First the headline (LMM-Reg., fine-tuning, the best
    other method's accuracy and name: `best_baseline`, `best_is`), then every method's mean and std over seeds
    (`test_acc.<method>`, `test_acc_std.<method>`), which the README's comparison command leaves out."""
    means = {m: s["test_acc_mean"] for m, s in summary.items()}
    head = {m: means[m] for m in (PROPOSED, BASELINE) if m in means}
    others = {m: a for m, a in means.items() if m not in (PROPOSED, BASELINE)}
    if others:
        best = max(others, key=lambda m: others[m])
        head.update(best_baseline=others[best], best_is=best)
    return {dataset: {**head, "test_acc": means, "test_acc_std": {m: s["test_acc_std"] for m, s in summary.items()}}}


REGISTER_ENV = "LMMREG_REGISTER"


def register_every() -> bool:
    """`LMMREG_REGISTER=every`: register the best servable method of every invocation, not only a new champion."""
    value = os.environ.get(REGISTER_ENV, "champion")
    if value not in ("champion", "every"):
        raise InputError(f"{REGISTER_ENV}={value!r}: expected 'champion' (the default) or 'every'")
    return value == "every"


def log_champion(logger: tracking.RunLogger, params: Params, results: dict[str, dict], *, dataset: str,
                 paths: TrainPaths, methods_dir: Path) -> dict | None:
    """Log the best servable method's best seed as a version of the MLflow model `lmmreg-<dataset>` with the alias
    `champion`, when its mean test accuracy is at least the champion's so far (or there is none). A worse one is
    not logged (`LMMREG_REGISTER=every` logs it as a plain version); one already registered is reused."""
    import numpy as np

    from lmmreg import classifier

    start = time.perf_counter()
    servable = {m: r for m, r in results.items() if m in classifier.SERVABLE}
    if not servable:
        log.warning("no method in train.methods classifies images alone (%s): no model logged", list(results))
        return None
    method = max(servable, key=lambda m: servable[m]["test_acc_mean"])
    seed_key, best = max(servable[method]["runs"].items(), key=lambda kv: kv[1]["test_acc"])
    name, score = f"lmmreg-{dataset}", servable[method]["test_acc_mean"]
    known = tracking.registered_version(name, run_id=best["run_id"])
    if known is not None:  # an earlier invocation trained this run and registered it: nothing new to serve
        log.info("%s: champion %s seed %s is run %s, already registered as %s", dataset, method, seed_key[1:],
                 best["run_id"], known["registered"])
        return {**known, "method": method, "seed": int(seed_key[1:]), "seconds": 0.0, "reused": True}
    current = tracking.champion(name)
    if current is not None and score < current["score"] and not register_every():
        # The registry holds the models worth serving, not one per ablation point (ViT-L/14's is over a GB).
        reason = (f"{method}'s mean test accuracy {score:.2f} is below the champion's {current['score']:.2f} "
                  f"(version {current['version']})")
        log.info("%s: no model logged: %s (%s=every logs one anyway)", dataset, reason, REGISTER_ENV)
        return {"registered": None, "version": None, "champion": False, "method": method,
                "seed": int(seed_key[1:]), "run_id": best["run_id"], "seconds": 0.0, "not_logged": reason}
    state_file = methods_dir / method / best["state"] if best.get("state") else None
    state = torch.load(state_file, weights_only=True) if state_file is not None and state_file.is_file() else None
    inputs, _, _ = load_inputs(params, features=paths.features, text=paths.text, centroids=paths.centroids)
    trainable = classifier.build_trainable(method, state_dict=state, base_tail=inputs.tail,
                                           class_text=inputs.class_text, centroids=inputs.centroids)
    model = inputs.clip_model
    _, classes = load_manifest(paths.manifest)
    meta = {"dataset": dataset, "method": method, "seed": int(seed_key[1:]), "run_id": best["run_id"],
            "test_acc": best["test_acc"], "test_acc_mean": servable[method]["test_acc_mean"]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = classifier.save_classifier(Path(tmp) / "classifier", clip=params.clip, visual=model.visual,
                                            trainable=trainable, classes=classes, meta=meta)
        example = [np.full((16, 16, 3), 128, dtype=np.uint8).tolist()]  # one grey image as [H, W, 3] uint8
        logged = logger.log_model(python_model=classifier.PyfuncClassifier(), artifacts={"classifier": str(folder)},
                                  input_example=example, pip_requirements=tracking.model_requirements(),
                                  registered_name=name, score=score,
                                  tags={f"lmmreg.{k}": str(v) for k, v in meta.items()})
    seconds = round(time.perf_counter() - start, 2)
    log.info("%s: %s seed %s logged as %s in %.1f s", dataset, method, meta["seed"], logged["registered"], seconds)
    return {**logged, "method": method, "seed": meta["seed"], "seconds": seconds}


def main(params: Params, *, dataset: str, paths: TrainPaths, methods_dir: Path, runs: Path, metrics: Path,
         plots: Path, log_model: bool = True) -> dict[str, dict]:
    if log_model:
        register_every()  # a bad LMMREG_REGISTER fails here, before the parent run opens
    results = load_results(methods_dir, list(params.train.methods))
    # Runs DVC restored that this store lacks (a teammate's clone, a new server) get a copy from their records,
    # before the parent opens: a store problem stops here, naming the run, with nothing written.
    records = {x["run_id"]: tracking.record_path(methods_dir / m, int(s[1:]))
               for m, r in results.items() for s, x in r["runs"].items()}
    resolved = tracking.resolve_runs(records)
    for r in results.values():
        for x in r["runs"].values():
            x["run_id"] = resolved[x["run_id"]]["run_id"]
    digest = manifest_digest(paths.manifest)
    shared = run_params(params, dataset)
    changes = tracking.changed_params(shared, tracking.committed_params())
    tags = dataset_tags(params, dataset, digest)
    summary = {m: {"test_acc_mean": r["test_acc_mean"], "test_acc_std": r["test_acc_std"],
                   "config_id": r["config_id"], "runs": {s: {"run_id": x["run_id"], "test_acc": x["test_acc"]}
                                                         for s, x in r["runs"].items()}}
               for m, r in results.items()}
    with tracking.RunLogger(dataset=dataset, params={**shared, "dataset": dataset,
                                                     "baselines": to_dict(params.baselines)}, tags=tags,
                            run_name=tracking.parent_run_name(dataset, changes)) as logger:
        adopted, reused = logger.adopt(resolved)
        means = {f"{tracking.SUMMARY_METRIC}{m}": s["test_acc_mean"] for m, s in summary.items()}
        logger.log_summary({**means, **{f"test_acc_std.{m}": s["test_acc_std"] for m, s in summary.items()}})
        champion = log_champion(logger, params, results, dataset=dataset, paths=paths,
                                methods_dir=methods_dir) if log_model else None
        if champion is not None:
            logger.tag({f"{tracking.TAG}model": champion["registered"] or f"not logged: {champion['not_logged']}"})
    log.info("%s: parent run %s: %d new run(s), %d reused unchanged (%d copied into this store from DVC's results)",
             dataset, logger.parent_id, len(adopted), len(reused), sum(i["copied"] for i in resolved.values()))
    # DVC metrics hold accuracies (and the best baseline's name) only; run ids go to runs.json.
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps(dvc_metrics(dataset, summary), indent=1) + "\n")
    runs.parent.mkdir(parents=True, exist_ok=True)
    runs.write_text(json.dumps({"parent_run_id": logger.parent_id, "methods": summary, "reused_runs": reused,
                                "model": champion}, indent=1) + "\n")
    write_curves(results, plots, methods=[m for m in params.train.methods if "train" in get_method(m).settings])
    log.info("compare the runs: %s", tracking.set_view_state(list(params.train.methods)))
    return summary


def cli() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    for name in ("manifest", "features", "text", "centroids", "methods", "runs", "metrics", "plots"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--no-model", action="store_true",
                        help="do not log and register the best method's classifier (lmmreg-<dataset>@champion)")
    run_stage(lambda a, p: main(p, dataset=a.dataset, methods_dir=a.methods, runs=a.runs, metrics=a.metrics,
                                plots=a.plots, log_model=not a.no_model,
                                paths=TrainPaths(manifest=a.manifest, features=a.features, text=a.text,
                                                 centroids=a.centroids)), parser)


if __name__ == "__main__":
    cli()
