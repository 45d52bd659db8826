"""Stage `pretrain_clip`: the demo CLIP learns its own world before the experiment starts.

    python -m lmmreg.stages.pretrain_clip --demo-raw data/raw/demo --out models/clip_pretrain \
        --metrics metrics/pretrain.json --resume-dir data/cache/pretrain [--workers 2]

With `pretrain.enabled` (the demo) it renders the corpus from its seed (data/corpus.py), trains the
random-init `clip.model` contrastively (pretrain.py), evaluates it beside the random init, and writes an
open_clip checkpoint that `clip.pretrained` points at, with a sidecar JSON saying what it is. Without it
(the paper's setting, `clip.pretrained: openai`) nothing is pretrained: the stage writes a note and
returns at once. `--workers` (rendering processes) changes no result; an interrupted run resumes from
its last saved step in `--resume-dir`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lmmreg import tracking
from lmmreg.cli import run_stage, stage_parser
from lmmreg.clip.build import build_clip
from lmmreg.clip.weights import save_clip_checkpoint
from lmmreg.config import ConfigError, Params, stable_hash, to_dict
from lmmreg.data.corpus import HELDOUT, TRAIN
from lmmreg.pretrain import RenderJob, evaluate_clip, render_corpus, train_clip

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


def load_demo_test(raw: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The demo's test split as [N, H, W, 3] uint8 images, labels and class names (classes.json order)."""
    classes_file = raw / "classes.json"
    if not classes_file.is_file():
        raise FileNotFoundError(f"{classes_file}: the demo dataset is missing (run `dvc repro make_demo`)")
    names = [c["name"] for c in json.loads(classes_file.read_text())]
    files = sorted((raw / "test").glob("*/*.png"))
    if not files:
        raise FileNotFoundError(f"{raw / 'test'}: no demo test images")
    images = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))) for f in files])
    labels = torch.tensor([names.index(f.parent.name) for f in files])
    return images, labels, names


def main(params: Params, *, demo_raw: Path, out: Path, metrics: Path, workers: int = 0,
         resume_dir: Path | None = None) -> dict:
    cfg = params.pretrain
    out.mkdir(parents=True, exist_ok=True)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    if not cfg.enabled:
        for stale in (out / CHECKPOINT, out / Path(CHECKPOINT).with_suffix(".json")):
            stale.unlink(missing_ok=True)
        (out / "README.txt").write_text(f"pretrain.enabled is false: nothing pretrained; clip.pretrained is "
                                        f"{params.clip.pretrained or 'random init'}.\n")
        summary = {"enabled": False}
        metrics.write_text(json.dumps(summary, indent=1) + "\n")
        return summary
    ckpt = out / CHECKPOINT
    if Path(params.clip.pretrained).resolve() != ckpt.resolve():
        raise ConfigError(f"pretrain.enabled is true, so clip.pretrained must be this stage's checkpoint {ckpt} "
                          f"(got {params.clip.pretrained!r}); or set pretrain.enabled: false")
    (out / "README.txt").unlink(missing_ok=True)
    torch.set_num_threads(cfg.threads)
    size = params.demo.image_size
    t0 = time.perf_counter()
    heldout = render_corpus(cfg, stream=HELDOUT, n=cfg.heldout_images, demo_seed=params.demo.seed, image_size=size,
                            workers=workers, desc="render held-out pairs")
    # The training corpus renders in the background while the random init is built and evaluated.
    job = RenderJob(cfg, stream=TRAIN, n=cfg.n_images, demo_seed=params.demo.seed, image_size=size, workers=workers,
                    background=True)
    try:
        demo_images, demo_labels, names = load_demo_test(demo_raw)
        model, _, tokenizer = build_clip(dataclasses.replace(params.clip, pretrained=""))  # random init, init_seed

        def evaluate() -> dict[str, float]:
            return evaluate_clip(model, tokenizer, heldout, demo_images=demo_images, demo_labels=demo_labels,
                                 class_names=names, class_prompt=params.clip.class_prompt)

        before = evaluate()
        corpus = job.result(tokenizer)  # its captions tokenized while the last chunks render
    finally:
        job.close()
    render_s = time.perf_counter() - t0  # until the corpus was ready (the evaluation above overlapped it)
    # An interrupted run resumes from here; keyed by everything that shapes the training.
    resume = None
    if resume_dir is not None:
        resume_dir.mkdir(parents=True, exist_ok=True)
        key = stable_hash({"pretrain": cfg, "clip": params.clip, "demo": params.demo})
        resume = resume_dir / f"{key}.pt"
    t1 = time.perf_counter()
    history = train_clip(model, tokenizer, corpus, cfg, resume=resume)
    train_s = time.perf_counter() - t1
    after = evaluate()
    made_by = {"made_by": "lmmreg pretrain_clip", "pretrain": to_dict(cfg), "pretrain_hash": stable_hash(cfg),
               "init_seed": params.clip.init_seed, "images": cfg.n_images,
               "pairs": cfg.n_images * cfg.captions_per_image, "train_minutes": round(train_s / 60, 2),
               "zs_demo_test": round(after["zs_demo_test"], 2)}
    save_clip_checkpoint(model, ckpt, arch=params.clip.model, made_by=made_by)
    if resume is not None:
        resume.unlink(missing_ok=True)
    ips = cfg.steps * cfg.batch_size / train_s
    summary = {"enabled": True, "images_per_s": round(ips, 1), "train_minutes": round(train_s / 60, 2),
               "render_s": round(render_s, 1), "final_loss": round(history[-1]["loss"], 4),
               "trained": {k: round(v, 2) for k, v in after.items()},
               "random_init": {k: round(v, 2) for k, v in before.items()}}
    metrics.write_text(json.dumps(summary, indent=1) + "\n")
    final = {**after, **{f"init_{k}": v for k, v in before.items()}, "images_per_s": ips, "train_s": train_s,
             "render_s": render_s}
    run_id = tracking.log_pretrain_run(
        name=f"{params.clip.model} · {cfg.n_images} images · {cfg.steps} steps",
        params={"pretrain": to_dict(cfg), "clip.model": params.clip.model, "clip.init_seed": params.clip.init_seed},
        history=history, final=final, tags={f"{tracking.TAG}pretrain_hash": stable_hash(cfg)},
        artifacts=[metrics, ckpt.with_suffix(".json")])
    log.info("pretrained %s: %.0f images/s, %.1f min; zero-shot on demo test %.1f%% (random init %.1f%%); "
             "MLflow run %s", params.clip.model, ips, train_s / 60, after["zs_demo_test"], before["zs_demo_test"],
             run_id)
    return summary


def cli() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--demo-raw", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2, help="processes rendering the corpus (no effect on results)")
    parser.add_argument("--resume-dir", type=Path, default=None,
                        help="where an interrupted pretraining keeps its state (resumed by the next run)")
    run_stage(lambda a, p: main(p, demo_raw=a.demo_raw, out=a.out, metrics=a.metrics, workers=a.workers,
                                resume_dir=a.resume_dir), parser)


if __name__ == "__main__":
    cli()
