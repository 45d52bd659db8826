"""Per-step cost of the baselines that dominate the train stage on the demo: ProLIP's 49-run search (one `fit`
per setting against `search_grid`, all settings at once) and CoOp's step (where its time goes).

    PYTHONPATH=src python benchmarks/bench_methods.py [--prolip-steps 30] [--coop-epochs 3] [--threads 1]

Demo-sized inputs (8 classes, 1,200 training images, the tiny CLIP with random weights: they cost what trained
ones do). Times are CPU seconds of this process (wall seconds beside them): on a shared machine they hold better
than wall time. Prints a Markdown section.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import os
import pstats
import time

import torch

from lmmreg.clip.build import build_clip
from lmmreg.clip.text import embed_texts
from lmmreg.clip.vision import VisionTail
from lmmreg.config import BaselinesConfig, ClipConfig, CoOpConfig, ProLIPConfig, TrainConfig
from lmmreg.methods import prolip as prolip_mod
from lmmreg.methods.base import MethodInputs, RunContext, quiet, run_method


def demo_inputs(n_classes: int = 8, n_train: int = 1200, n_test: int = 400) -> MethodInputs:
    """Separable clusters in the tiny CLIP's cache space, class texts embedded from real prompts."""
    torch.manual_seed(0)
    model, _, tok = build_clip(ClipConfig())
    g = torch.Generator().manual_seed(0)
    names = [f"class{i}" for i in range(n_classes)]
    width = model.visual.proj.shape[0]
    centers = torch.randn(n_classes, width, generator=g) * 3
    ytr, yte = torch.arange(n_train) % n_classes, torch.arange(n_test) % n_classes
    text = embed_texts(model, tok, [f"a photo of a {n}." for n in names], progress=False).emb
    d = text.shape[1]
    train_feat = centers[ytr] + torch.randn(n_train, width, generator=g)
    return MethodInputs(tail=VisionTail(model.visual, 1), train_feat=train_feat,
                        test_feat=centers[yte] + torch.randn(n_test, width, generator=g), train_y=ytr, test_y=yte,
                        centroids=torch.zeros(n_classes, d), class_text=text, train_text_mean=torch.zeros(n_train, d),
                        test_text_mean=torch.zeros(n_test, d), classnames=names, clip_model=model, tokenizer=tok,
                        logit_scale=model.logit_scale.exp().item())


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prolip-steps", type=int, default=30)
    p.add_argument("--coop-epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    inp = demo_inputs()
    part = inp.subset(torch.arange(960))  # the search fits on 80 % of the training images
    val_x, val_y = inp.train_feat[960:], inp.train_y[960:]
    base = BaselinesConfig(prolip=ProLIPConfig(steps=args.prolip_steps))
    ctx = RunContext(alpha=0.0, cfg=TrainConfig(), baselines=base, seed=0)
    grid = [(a, b) for a in base.prolip.lr_grid for b in base.prolip.reg_grid]
    lines = [f"## Methods benchmark, load average {os.getloadavg()[0]:.1f}, {args.threads} thread(s)", ""]

    def one_fit_each() -> list[float]:
        return [prolip_mod.train_prolip(part, quiet(ctx, "search"), lr=a, reg=b, eval_x=val_x, eval_y=val_y,
                                        search=True).final.acc for a, b in grid]

    loop, loop_cpu, loop_wall = timed(one_fit_each)
    batched, b_cpu, b_wall = timed(lambda: prolip_mod.search_grid(part, ctx, grid=grid, eval_x=val_x, eval_y=val_y))
    lines += [f"- ProLIP search, {len(grid)} settings x {args.prolip_steps} full-batch steps on 960 images: one `fit` "
              f"each {loop_cpu:.1f} CPU s ({loop_wall:.1f} s wall), `search_grid` {b_cpu:.1f} CPU s ({b_wall:.1f} s "
              f"wall): **{loop_cpu / b_cpu:.1f}x**; the same accuracies: {loop == batched}"]
    coop = dataclasses.replace(BaselinesConfig(), coop=CoOpConfig(epochs=args.coop_epochs))
    prof = cProfile.Profile()
    _, c_cpu, c_wall = timed(lambda: (prof.enable(), run_method("coop", inp, alpha=0.0, cfg=TrainConfig(), seed=0,
                                                                  baselines=coop), prof.disable()))
    stats = pstats.Stats(prof).stats
    steps = args.coop_epochs * -(-len(inp.train_y) // coop.coop.batch_size)

    def cum(name: str, file: str = "") -> float:  # cumulative seconds of the functions whose name contains `name`
        return sum(v[3] for k, v in stats.items() if name in k[2] and k[0].endswith(file))

    total, text, backward = cum("run_method"), cum("encode_text_embeddings"), cum("<method 'run_backward'")
    opt = cum("step", "optim/sgd.py")
    lines += [f"- CoOp, {steps} steps ({args.coop_epochs} epochs, batch 32, 8 prompts, 16 context tokens): "
              f"{1000 * c_cpu / steps:.1f} CPU ms a step ({1000 * c_wall / steps:.1f} wall, under cProfile); of its "
              f"time the text tower's forward {100 * text / total:.0f} % (per-epoch evaluations included), the "
              f"backward {100 * backward / total:.0f} %, SGD {100 * opt / total:.0f} %"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
