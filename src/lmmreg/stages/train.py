"""Stage `train@<dataset>-<method>`: one method of `train.methods`, every seed, on the cached features.

DVC runs one such stage per (dataset, method), each depending on its own plan file (stage `plan`, lmmreg.plan):
`dvc exp run -S alpha=0.1` re-trains LMM-Reg. alone, `-S baselines.coop.lr=...` CoOp alone, and DVC's
run-cache restores a method's earlier outputs when its plan comes back. Each (method, seed) is one live MLflow
run (opened when its training starts, epochs streamed, ended FINISHED/FAILED/KILLED); stage `summarize` gives
them their dataset's parent run. Seeds run side by side in single-threaded processes, one per core of
`threads.budget()` (all seeds at once where that finishes sooner: `workers_for`), so a queued sweep's
experiments share the cores instead of fighting for them; a seed's numbers are the same in any process.
Under `train.shots: K` each seed trains on its own K-shot subset (lmmreg.shots).

    python -m lmmreg.stages.train --dataset demo --method lmm_reg --plan data/plan/demo/lmm_reg.json \
        --manifest data/prepared/demo --features data/features/demo.pt --text data/text/demo \
        --centroids data/centroids/demo.pt --out models/demo/methods/lmm_reg

Outputs: `result.json` (per seed: run id, test accuracy, history, final metrics) and `s<seed>.pt` (the trained
head and tail of the seed, for methods that train one).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from lmmreg import tracking
from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params
from lmmreg.data.manifest import manifest_digest
from lmmreg.errors import InputError
from lmmreg.plan import TrainPaths, load_plan
from lmmreg.run_metadata import child_run_metadata
from lmmreg.seed_pool import now_ms, run_parallel, workers_for
from lmmreg.seed_run import Job, SeedRunner, warn_unconverged
from lmmreg.stats import mean_std

log = logging.getLogger(__name__)


def main(params: Params, *, dataset: str, method: str, plan: Path, paths: TrainPaths, out: Path,
         device: str = "cpu") -> dict:
    key = load_plan(plan, dataset=dataset, method=method)
    if key["seeds"] != list(params.seeds):
        raise InputError(f"{plan}: planned for seeds {key['seeds']}, params say {params.seeds} (re-run dvc repro)")
    out.mkdir(parents=True, exist_ok=True)
    job = Job(params, dataset, method, paths, out, device)
    run_params_, tags, alpha = child_run_metadata(params, key, dataset=dataset, method=method,
                                                  digest=manifest_digest(paths.manifest))
    n_workers = workers_for(params, method, device)
    results: dict[int, dict] = {}
    started = time.perf_counter()
    runner = SeedRunner(job)
    test_ids, test_labels = runner.test_ids, runner.inputs.test_y.tolist()
    with tracking.LiveRuns(dataset=dataset) as live:
        def handle(kind: str, seed: int, t_ms: int, payload: Any) -> None:
            """A run's progress, from this process or a helper: opened, an epoch, finished or failed."""
            if kind == "start":
                live.start(seed, name=tracking.child_run_name(dataset, method, seed, alpha),
                           params={**run_params_, "seed": seed}, tags={**tags, "lmmreg.seed": str(seed)}, start_ms=t_ms)
            elif kind == "epoch":
                live.log_epoch(seed, payload, time_ms=t_ms)
            elif kind == "done":
                results[seed] = payload
                arts: dict[str, Any] = {"predictions.json": {"ids": test_ids, "labels": test_labels,
                                                             "preds": payload["preds"]}}
                if params.train.shots != "all":
                    arts["shots.json"] = {"shots": params.train.shots, "seed": seed, "ids": payload["shot_ids"]}
                if payload["state"]:
                    arts["head.pt"] = Path(payload["state"])
                payload["run_id"] = live.finish(seed, final=payload["final"], artifacts=arts, tags=payload["tags"],
                                                end_ms=t_ms)
                tracking.write_record(live.record(seed), tracking.record_path(out, seed))
                log.info("%s %s seed %d: test acc %.2f%% (epoch %d) run %s", dataset, method, seed,
                         payload["test_acc"], payload["reported_epoch"], payload["run_id"])
            elif kind == "error":
                live.fail(seed, payload)
                raise RuntimeError(f"{dataset} {method} seed {seed} failed in a helper process:\n{payload}")

        if n_workers == 1:
            for seed in params.seeds:
                res = runner.run_seed(seed, lambda kind, s, payload: handle(kind, s, now_ms(), payload))
                handle("done", seed, now_ms(), res)
        else:
            n_workers = 1 + run_parallel(job, runner, n_workers, handle)
    seconds = time.perf_counter() - started
    warn_unconverged(dataset, method, results)
    runs = {f"s{s}": {"run_id": r["run_id"], "test_acc": r["test_acc"], "reported_epoch": r["reported_epoch"],
                      "converged": r["tags"].get("lmmreg.converged"),
                      "seconds": round(r["seconds"], 3), "final": r["final"], "history": r["history"],
                      "state": Path(r["state"]).name if r["state"] else None} for s, r in sorted(results.items())}
    mean, std = mean_std([r["test_acc"] for r in runs.values()])
    result = {"dataset": dataset, "method": method, "config_id": key["config_id"], "seeds": list(params.seeds),
              "test_acc_mean": round(mean, 4), "test_acc_std": round(std, 4), "workers": n_workers,
              "seconds": round(seconds, 2), "runs": runs}
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    log.info("%s %s: %.2f ± %.2f%% over %d seeds in %.1f s (%d process%s)", dataset, method, mean, std,
             len(runs), seconds, n_workers, "" if n_workers == 1 else "es")
    return result


def cli() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--method", required=True)
    for name in ("plan", "manifest", "features", "text", "centroids", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run_stage(lambda a, p: main(p, dataset=a.dataset, method=a.method, plan=a.plan, out=a.out, device=a.device,
                                paths=TrainPaths(manifest=a.manifest, features=a.features, text=a.text,
                                                 centroids=a.centroids)), parser)


if __name__ == "__main__":
    cli()
