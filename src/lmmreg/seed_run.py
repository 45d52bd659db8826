"""One (method, seed) run of a train stage: its few-shot subset, the method, and the final metrics it is logged with.

`SeedRunner` loads a job's inputs once per process (the stage's, or a helper's of lmmreg.seed_pool) and runs
seeds on them; `Job` is what a helper process needs to build its own (picklable).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmmreg.artifacts import load_artifact
from lmmreg.config import Params
from lmmreg.convergence import KNOBS, check_convergence, reference_train_acc
from lmmreg.data.manifest import load_manifest
from lmmreg.engine import budget_schedule
from lmmreg.identity import method_alpha
from lmmreg.inputs import load_inputs
from lmmreg.methods import get_method
from lmmreg.methods.base import MethodInputs, embed, run_method
from lmmreg.plan import TrainPaths
from lmmreg.reg_targets import with_reg_target
from lmmreg.shots import few_shot_inputs, total_steps
from lmmreg.stats import compactness

log = logging.getLogger(__name__)


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


class SeedRunner:
    """The inputs of a job, loaded once per process, and the run of one seed."""

    def __init__(self, job: Job):
        self.job = job
        p = job.params
        self.need_clip = bool(get_method(job.method).needs & {"clip_model", "tokenizer"})
        self.inputs, self.test_ids, self.train_ids = load_inputs(p, features=job.paths.features, text=job.paths.text,
                                                                 centroids=job.paths.centroids,
                                                                 need_clip=self.need_clip,
                                                                 need_desc="train_desc" in get_method(job.method).needs)
        _, self.classes = load_manifest(job.paths.manifest)
        # budget: steps gives every K the optimiser steps of the full-data run (lmmreg.engine.budget_schedule).
        self.cfg = p.train if p.train.budget == "epochs" else \
            dataclasses.replace(p.train, steps=total_steps(p.train, len(self.train_ids)))
        self.desc = load_artifact(job.paths.text / "descriptions.pt") if p.train.shots != "all" else None
        # J_reg's target (train.reg_target), for the methods whose loss has one
        self.reg_target = p.train.reg_target if get_method(job.method).reads_alpha else None
        self.random_text = load_artifact(job.paths.text / "random_text.pt") \
            if self.reg_target == "random_text" else None
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
        if self.reg_target is not None:  # from this seed's training images only (its K shots under few-shot)
            inp = with_reg_target(inp, self.reg_target, train_ids=shot_ids, classes=self.classes,
                                  random_text=self.random_text)
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


def warn_unconverged(dataset: str, method: str, results: dict[int, dict]) -> None:
    """One warning line per method whose runs the convergence check flagged, naming the knobs to raise."""
    flagged = {s: r for s, r in sorted(results.items()) if r["tags"].get("lmmreg.converged") == "false"}
    if not flagged:
        return
    seed, worst = min(flagged.items(), key=lambda kv: kv[1]["final"]["train_acc"])
    log.warning("%s %s: %d of %d seeds under-trained; their test accuracy measures the budget, not the method "
                "(README, own data). Seed %d: %s", dataset, method, len(flagged), len(results), seed,
                worst["tags"]["lmmreg.converged_reason"])
