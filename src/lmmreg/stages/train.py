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

import dataclasses
import json
import logging
import multiprocessing as mp
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmmreg import threads, tracking
from lmmreg.artifacts import check_aligned, load_artifact
from lmmreg.cli import run_stage, stage_parser
from lmmreg.clip.build import build_clip
from lmmreg.clip.vision import VisionTail
from lmmreg.config import Params, to_dict
from lmmreg.convergence import KNOBS, check_convergence, reference_train_acc
from lmmreg.data.manifest import load_manifest, manifest_digest
from lmmreg.describe.setting import DESCRIBE_KEYS, setting_hash
from lmmreg.engine import budget_schedule
from lmmreg.identity import baseline_settings, method_alpha, run_identity, study_id, study_point
from lmmreg.methods import MethodInputs, get_method, run_method
from lmmreg.methods.base import embed
from lmmreg.plan import TrainPaths, load_plan
from lmmreg.shots import few_shot_inputs, total_steps
from lmmreg.stats import compactness, mean_std

log = logging.getLogger(__name__)


def load_inputs(params: Params, *, features: Path, text: Path, centroids: Path,
                need_clip: bool = True) -> tuple[MethodInputs, list[str], list[str]]:
    """The method inputs, the test image ids and the train image ids (rows in the order of the inputs).

    Without `need_clip` (a method that never runs CLIP's text tower) and with one unlocked group, the tail starts
    from the `visual.proj` the features stage saved beside the cache: the same tensor, and no open_clip import or
    model build (~8 s of a train stage on 2 cores); `clip_model` and `tokenizer` are then None."""
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
    init = feats.meta.get("tail_init")
    if need_clip or params.clip.unlocked_groups != 1 or init is None:
        model, _, tokenizer = build_clip(params.clip)  # the text tower stays for prompt learning (coop)
        tail, logit_scale = VisionTail(model.visual, params.clip.unlocked_groups), model.logit_scale.exp().item()
    else:
        model, tokenizer = None, None
        tail, logit_scale = VisionTail.from_proj(init["proj"]), float(init["logit_scale"])
    test = feats.tensors["is_test"]
    f, y, m = feats.tensors["feat"], feats.labels, image_mean.tensors["mean"]
    inputs = MethodInputs(tail=tail, train_feat=f[~test], test_feat=f[test], train_y=y[~test], test_y=y[test],
                          centroids=cents.tensors["centroid"], class_text=class_text.tensors["emb"],
                          train_text_mean=m[~test], test_text_mean=m[test],
                          train_aug=feats.tensors["aug"][~test] if "aug" in feats.tensors else None,
                          classnames=list(class_text.ids), clip_model=model, tokenizer=tokenizer,
                          logit_scale=logit_scale)
    split = test.tolist()
    return inputs, [i for i, t in zip(feats.ids, split, strict=True) if t], \
        [i for i, t in zip(feats.ids, split, strict=True) if not t]


def run_params(params: Params, dataset: str) -> dict:
    """What every run of this invocation is trained with, nested as in params.yaml (logged as `train.lr` ...)."""
    describe = to_dict(params.describe)
    return {"alpha": params.alpha, "seeds": params.seeds, "train": to_dict(params.train), "clip": to_dict(params.clip),
            "describe": {k: describe[k] for k in DESCRIBE_KEYS}, "sources": {dataset: to_dict(params.source(dataset))}}


def dataset_tags(params: Params, dataset: str, digest: str) -> dict[str, str]:
    """Tags every run of a dataset's invocation carries (child runs of the train stages, the summarize parent)."""
    return {"lmmreg.data_digest": digest, "lmmreg.describe_setting": setting_hash(params.describe),
            "lmmreg.study_id": study_id(params, dataset=dataset, data_digest=digest),
            "lmmreg.point": json.dumps(study_point(params), sort_keys=True)}


def reg_ce_ratios(history: list[dict], alpha: float | None) -> dict[str, float]:
    """alpha * J_reg / J_ce over the first and the last evaluated epoch: how much the regulariser weighs."""
    if alpha is None or "train_reg" not in history[0]:
        return {}
    return {f"reg_ce_ratio_{name}": alpha * row["train_reg"] / row["train_ce"] if row["train_ce"] > 0 else float("nan")
            for name, row in (("first", history[0]), ("last", history[-1]))}


@dataclasses.dataclass(frozen=True)
class Job:
    """One train stage's work, as a helper process needs it to load its own inputs (picklable)."""

    params: Params
    dataset: str
    method: str
    paths: TrainPaths
    out: Path
    device: str


class Trainer:
    """The inputs of a job, loaded once per process, and the run of one seed."""

    def __init__(self, job: Job):
        self.job = job
        p = job.params
        self.need_clip = bool(get_method(job.method).needs & {"clip_model", "tokenizer"})
        self.inputs, self.test_ids, self.train_ids = load_inputs(p, features=job.paths.features, text=job.paths.text,
                                                                 centroids=job.paths.centroids,
                                                                 need_clip=self.need_clip)
        _, self.classes = load_manifest(job.paths.manifest)
        # budget: steps gives every K the optimiser steps of the full-data run (lmmreg.engine.budget_schedule).
        self.cfg = p.train if p.train.budget == "epochs" else \
            dataclasses.replace(p.train, steps=total_steps(p.train, len(self.train_ids)))
        self.desc = load_artifact(job.paths.text / "descriptions.pt") if p.train.shots != "all" else None
        self._reference: dict[tuple[str, ...], float] = {}  # training ids -> the reference probe's train acc

    def reference_acc(self, inp: MethodInputs, ids: list[str]) -> float:
        """The converged reference probe's training accuracy on these training images (once per id set: every
        seed shares it under `shots: all`)."""
        key = tuple(ids)
        if key not in self._reference:
            self._reference[key] = reference_train_acc(embed(inp.tail, inp.train_feat), inp.train_y)
        return self._reference[key]

    def run_seed(self, seed: int, emit: Callable[[str, int, Any], None]) -> dict:
        """Train and evaluate one seed; `emit(kind, seed, payload)` reports "start" and every "epoch"."""
        job, p = self.job, self.job.params
        inp, shot_ids = few_shot_inputs(self.inputs, p.train, seed=seed, train_ids=self.train_ids, desc=self.desc,
                                        classes=self.classes)
        emit("start", seed, None)
        started = time.perf_counter()
        res = run_method(job.method, inp, alpha=p.alpha, cfg=self.cfg, seed=seed, device=job.device,
                         desc=f"{job.dataset} {job.method} s{seed}", baselines=p.baselines,
                         on_epoch=lambda row: emit("epoch", seed, row))
        accs = [row["test_acc"] for row in res.history]
        engine_trained = "train" in get_method(job.method).settings
        final = {"final_test_acc": accs[-1], "best_test_acc": max(accs), "reported_test_acc": res.final.acc,
                 "reported_epoch": res.reported_epoch, "n_train_images": len(shot_ids),
                 "train_steps": budget_schedule(self.cfg, len(shot_ids))[2] if engine_trained else 0,
                 **compactness(res.final.emb.numpy(), self.inputs.test_y.numpy()),
                 **reg_ce_ratios(res.history, method_alpha(job.method, p.alpha)),
                 **{f"chosen_{k}": float(v) for k, v in res.chosen.items()}}  # picked on validation
        tags: dict[str, str] = {}
        if res.train_acc is not None:  # trained by the engine: did the budget let it converge? (training split only)
            # the paper's methods train a linear head on f(I) or more: they can fit what the reference fits;
            # a baseline trains with its own section's recipe
            knobs = KNOBS if engine_trained else f"baselines.{job.method}'s epochs (or steps) and lr"
            check = check_convergence(res.history, train_acc=res.train_acc, contains_reference=engine_trained,
                                      reference_acc=self.reference_acc(inp, shot_ids), knobs=knobs)
            final.update(check.metrics(), converged=float(check.converged))
            tags = check.tags()
        state = None
        if res.state_dict:
            state = job.out / f"s{seed}.pt"
            torch.save(res.state_dict, state)
        return {"seed": seed, "seconds": time.perf_counter() - started, "history": res.history, "final": final,
                "test_acc": res.final.acc, "tags": tags,
                "reported_epoch": res.reported_epoch, "preds": res.final.preds.tolist(), "shot_ids": shot_ids,
                "state": str(state) if state else None}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _helper(job: Job, n_threads: int, claim, msgs) -> None:
    """A helper process: claims seeds until none is left, sends its runs' progress and results to the stage."""
    threads.configure(n_threads)
    trainer, seed = None, None
    try:
        while (seed := _claim(claim, job.params.seeds)) is not None:
            trainer = trainer or Trainer(job)
            result = trainer.run_seed(seed, lambda kind, s, payload: msgs.put((kind, s, _now_ms(), payload)))
            msgs.put(("done", seed, _now_ms(), result))
    except BaseException:  # noqa: BLE001 - the stage reports it, naming the seed
        msgs.put(("error", seed, _now_ms(), traceback.format_exc()))


def _claim(counter, seeds: list[int]) -> int | None:
    """The next unclaimed seed (shared counter), or None when every seed is taken."""
    with counter.get_lock():
        i = counter.value
        if i >= len(seeds):
            return None
        counter.value = i + 1
    return seeds[i]


def workers_for(params: Params, method: str, device: str) -> int:
    """Processes to run the seeds in, one thread each; one on a GPU and for the training-free methods (their seeds
    take milliseconds).

    With B cores and S seeds: min(S, B) processes, except where B < S < 2B: then all S at once, so the cores
    time-slice S single-threaded processes and finish together after S/B seed-times, where B processes take two
    rounds and leave cores idle in the second (3 seeds on 2 cores: 1.5 seed-times instead of 2). A seed's numbers
    are the same in any process (tests/test_threads.py)."""
    if device != "cpu" or not get_method(method).trains:
        return 1
    cores, seeds = threads.budget(), len(params.seeds)
    return seeds if cores < seeds < 2 * cores else max(1, min(cores, seeds))


def main(params: Params, *, dataset: str, method: str, plan: Path, paths: TrainPaths, out: Path,
         device: str = "cpu") -> dict:
    key = load_plan(plan, dataset=dataset, method=method)
    if key["seeds"] != list(params.seeds):
        raise ValueError(f"{plan}: planned for seeds {key['seeds']}, params say {params.seeds} (re-run dvc repro)")
    out.mkdir(parents=True, exist_ok=True)
    job = Job(params, dataset, method, paths, out, device)
    digest = manifest_digest(paths.manifest)
    ident = run_identity(params, dataset=dataset, method=method, data_digest=digest)
    alpha = method_alpha(method, params.alpha)
    point = study_point(params)
    shared = run_params(params, dataset)
    tags = {**dataset_tags(params, dataset, digest), "lmmreg.dataset": dataset, "lmmreg.method": method,
            "lmmreg.config_id": ident["config_id"], "lmmreg.ablation_id": ident["ablation_id"],
            "lmmreg.alpha": ident["alpha"], "lmmreg.demo": str(params.source(dataset).layout == "demo")}
    run_params_ = {**{k: v for k, v in shared.items() if k != "seeds"},
                   "train": {k: v for k, v in shared["train"].items() if k != "methods"}, "dataset": dataset,
                   "describe_noise": point["describe_noise"], "method": method,
                   "alpha": "none" if alpha is None else alpha, **baseline_settings(params, method)}
    n_workers = workers_for(params, method, device)
    results: dict[int, dict] = {}
    started = time.perf_counter()
    trainer = Trainer(job)
    test_ids, test_labels = trainer.test_ids, trainer.inputs.test_y.tolist()
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
                res = trainer.run_seed(seed, lambda kind, s, payload: handle(kind, s, _now_ms(), payload))
                handle("done", seed, _now_ms(), res)
        else:
            n_workers = 1 + _run_parallel(job, trainer, n_workers, handle)
    seconds = time.perf_counter() - started
    warn_unconverged(dataset, method, results)
    runs = {f"s{s}": {"run_id": r["run_id"], "test_acc": r["test_acc"], "reported_epoch": r["reported_epoch"],
                      "converged": r["tags"].get("lmmreg.converged"),
                      "seconds": round(r["seconds"], 3), "final": r["final"], "history": r["history"],
                      "state": Path(r["state"]).name if r["state"] else None} for s, r in sorted(results.items())}
    mean, std = mean_std([r["test_acc"] for r in runs.values()])
    result = {"dataset": dataset, "method": method, "config_id": ident["config_id"], "seeds": list(params.seeds),
              "test_acc_mean": round(mean, 4), "test_acc_std": round(std, 4), "workers": n_workers,
              "seconds": round(seconds, 2), "runs": runs}
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    log.info("%s %s: %.2f ± %.2f%% over %d seeds in %.1f s (%d process%s)", dataset, method, mean, std,
             len(runs), seconds, n_workers, "" if n_workers == 1 else "es")
    return result


def warn_unconverged(dataset: str, method: str, results: dict[int, dict]) -> None:
    """One warning line per method whose runs the convergence check flagged, naming the knobs to raise."""
    flagged = {s: r for s, r in sorted(results.items()) if r["tags"].get("lmmreg.converged") == "false"}
    if not flagged:
        return
    seed, worst = min(flagged.items(), key=lambda kv: kv[1]["final"]["train_acc"])
    log.warning("%s %s: %d of %d seeds under-trained; their test accuracy measures the budget, not the method "
                "(README, own data). Seed %d: %s", dataset, method, len(flagged), len(results), seed,
                worst["tags"]["lmmreg.converged_reason"])


# What a helper process costs before its first seed: importing torch, open_clip and MLflow and loading the inputs,
# measured at 8-10 s on a 2-core machine. A method whose seed takes less runs all its seeds here.
HELPER_START_S = 8.0


def _helper_context(need_clip: bool):
    """Where helpers come from: multiprocessing's fork server (started with the first helper), else spawn.

    The server imports what this module imports (not this module itself: a helper runs it as __mp_main__, and
    runpy warns when it is imported already), scikit-learn (every trained seed's convergence check) and, for a
    method that runs CLIP's text tower, open_clip (5 s of a core on its own: not for the methods that never
    build CLIP)."""
    if "forkserver" not in mp.get_all_start_methods():  # not on Windows
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["lmmreg.methods", "lmmreg.tracking", "lmmreg.convergence", "lmmreg.clip.build",
                                "lmmreg.plan", "lmmreg.shots", "lmmreg.identity", "sklearn.linear_model",
                                *(["open_clip"] if need_clip else [])])
    return ctx


def _run_parallel(job: Job, trainer: Trainer, n_workers: int, handle: Callable[[str, int, int, Any], None]) -> int:
    """Seeds in this process and in helper processes; returns how many helpers it started.

    The first seed starts here. If it is still running after as long as a helper takes to start
    (HELPER_START_S), up to `n_workers - 1` helpers are started beside it, each single-threaded or
    `budget // n_workers` threads; this process and they claim the remaining seeds in order from a shared
    counter, and this process relays the helpers' messages between its own epochs. A method whose seeds are
    quicker than that runs them all here.

    Helpers are forked from multiprocessing's fork server (`_helper_context`: it imports what a helper needs once,
    when the first helper starts, and never runs torch): the second helper costs a fork, where a spawned one
    imports everything again (8-10 s of a core), and a fork of this process after torch's threads started can
    hang."""
    ctx = _helper_context(trainer.need_clip)
    cores = threads.budget()
    n_threads = max(1, cores // n_workers)
    threads.configure(n_threads)  # from here on, budget() says n_threads
    claim, msgs = ctx.Value("i", 0), ctx.Queue()
    seeds = job.params.seeds
    done: set[int] = set()
    helpers: list = []

    def drain(block: bool) -> None:
        import queue

        while True:
            try:
                kind, seed, t_ms, payload = msgs.get(timeout=0.5) if block else msgs.get_nowait()
            except queue.Empty:
                return
            handle(kind, seed, t_ms, payload)
            if kind == "done":
                done.add(seed)
            block = False

    def own(kind: str, s: int, payload: Any) -> None:
        handle(kind, s, _now_ms(), payload)
        drain(block=False)

    def spawn() -> None:
        """Runs on a timer thread while the first seed trains: helpers for the seeds nobody has claimed, one per
        spare core; more (up to `n_workers - 1`) only if the first seed still runs once those have started, where
        sharing the cores among all seeds beats a second round (quicker seeds would not repay their start)."""
        left = len(seeds) - claim.value
        per_core = min(n_workers, cores) - 1
        for i in range(min(n_workers - 1, left)):
            if i >= per_core and first_done.is_set():
                break
            h = ctx.Process(target=_helper, args=(job, n_threads, claim, msgs), daemon=True)
            helpers.append(h)
            h.start()  # the first one waits for the fork server's imports

    timer = threading.Timer(HELPER_START_S, spawn)
    first_done = threading.Event()

    try:
        while (seed := _claim(claim, seeds)) is not None:
            if not done:
                timer.start()  # the first seed: helpers only if it outlasts their start-up
            res = trainer.run_seed(seed, own)
            if not done:
                first_done.set()  # from here, no more helpers than spare cores (spawn reads it)
                timer.cancel()  # no helpers if none has started; a start under way goes on beside this process
            handle("done", seed, _now_ms(), res)
            done.add(seed)
            drain(block=False)
        while len(done) < len(seeds):
            drain(block=True)
            # a helper may still be starting (the fork server's imports): only a spawn that is over can fail us
            if len(done) < len(seeds) and not timer.is_alive() and not any(h.is_alive() for h in helpers):
                drain(block=False)
                if len(done) < len(seeds):
                    missing = sorted(set(seeds) - done)
                    raise RuntimeError(f"{job.dataset} {job.method}: the helper processes ended without the "
                                       f"results of seeds {missing} (exit codes {[h.exitcode for h in helpers]})")
    finally:
        timer.cancel()
        if timer.is_alive():  # a start under way (only where every seed ended before the fork server was ready):
            timer.join()  # its helper is stopped below, not left to start once the shared counter is gone
        for h in helpers:
            if h.pid is None:  # never started (its start failed): nothing to stop, and the error above stands
                continue
            if h.is_alive():
                h.terminate()
            h.join(timeout=5)
    return len(helpers)


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
