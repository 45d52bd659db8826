"""Speed of the demo CLIP's in-world pretraining: corpus rendering images/s, training images/s and the
share of this machine's fp32 matmul ceiling (measured in the same run), per model config.

    PYTHONPATH=src python benchmarks/bench_pretrain.py [--models lmmreg-tiny-quickgelu] [--steps 20]

Writes `reports/bench_pretrain.md` (one section appended per run) and prints it. The whole stage's wall
time and its result are in `metrics/pretrain.json` after `dvc repro pretrain_clip`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from bench_clip import append_section, machine, matmul_flops  # noqa: E402

from lmmreg.clip.build import build_clip  # noqa: E402
from lmmreg.clip.text import encode_text_tokens, trim_padding  # noqa: E402
from lmmreg.config import ClipConfig, PretrainConfig  # noqa: E402
from lmmreg.data.corpus import TRAIN  # noqa: E402
from lmmreg.pretrain import parameter_groups, render_corpus, to_model_input  # noqa: E402


def step_fn(model, tokens, images):
    from open_clip.loss import ClipLoss

    loss_fn = ClipLoss()
    opt = torch.optim.AdamW(parameter_groups(model, 0.1), lr=1e-3)

    def step():
        img = F.normalize(model.encode_image(to_model_input(images, model)), dim=-1)
        txt = F.normalize(encode_text_tokens(model, tokens), dim=-1)
        loss = loss_fn(img, txt, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["lmmreg-tiny-quickgelu"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--render", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("reports/bench_pretrain.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ceiling, dtype = matmul_flops("cpu", size=2048, repeats=3)
    cfg = PretrainConfig(n_images=max(args.render, args.batch))
    lines = [f"## Pretraining benchmark, {dt.datetime.now().isoformat(timespec='seconds')}", "",
             f"`{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}` on {machine('cpu')}, {args.threads} threads", "",
             f"Measured matmul ceiling ({dtype}): **{ceiling / 1e9:,.0f} GFLOP/s**; 1-min load average at the start "
             f"{os.getloadavg()[0]:.1f} (above the core count, other jobs shared the cores and the ratio holds better "
             "than the absolute figures)", ""]
    for workers in (0, 2):
        t = time.perf_counter()
        corpus = render_corpus(cfg, stream=TRAIN, n=args.render, demo_seed=0, image_size=64, workers=workers)
        rate = args.render / (time.perf_counter() - t)
        lines.append(f"- corpus rendering, {workers} worker processes: **{rate:,.0f} images/s**")
    lines += ["", "| model | batch | train images/s | GFLOP/image (fwd+bwd) | GFLOP/s | of matmul ceiling |",
              "|---|---|---|---|---|---|"]
    for name in args.models:
        model, _, tok = build_clip(ClipConfig(model=name))
        model.train()
        idx = torch.arange(args.batch) % len(corpus.captions)
        tokens = trim_padding(tok([corpus.captions[i][0] for i in idx.tolist()]))
        images = corpus.images[idx]
        step = step_fn(model, tokens, images)
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops()
        for _ in range(2):
            step()
        t = time.perf_counter()
        for _ in range(args.steps):
            step()
        rate = args.steps * args.batch / (time.perf_counter() - t)
        per_img = flops / args.batch
        lines.append(f"| {name} | {args.batch} | {rate:,.0f} | {per_img / 1e9:.3f} | {rate * per_img / 1e9:,.1f} | "
                     f"{rate * per_img / ceiling:.0%} |")
    text = "\n".join(lines) + "\n"
    append_section(args.out, "# Pretraining benchmarks\n\nWritten by `benchmarks/bench_pretrain.py`.\n\n", text)
    print(text)


if __name__ == "__main__":
    main()
