"""Stage `features@<dataset>`: frozen CLIP image features at the trainable boundary, computed once.

    python -m lmmreg.stages.features --raw data/raw/demo --manifest data/prepared/demo \
        --out data/features/demo.pt [--device cuda --batch-size 512 --workers 8 --precision auto]

`clip.unlocked_groups: 1` caches the pooled `ln_post` class token [N, width] (only `visual.proj`
trains, as in the paper); `2` caches the tokens entering the last block [N, T, width].
`clip.augment_views: K > 0` also caches K augmented views of every training image ("aug", [N, K, ...];
test rows stay zero, `has_aug` marks the rows that hold views). `is_test` marks the test rows; `is_val`, written
only for a dataset with its own validation split (CoOp's format), marks those.
Device, batch size, workers and precision change no result beyond float rounding, so they are flags,
not params: DataLoader workers decode in parallel into pinned memory, the model runs in inference mode
under bf16/fp16 autocast on CUDA with channels-last input.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from lmmreg.artifacts import Artifact, save_artifact
from lmmreg.cli import add_compute_args, batch_size, run_stage, stage_parser
from lmmreg.clip.build import build_clip, build_train_transform, clip_meta
from lmmreg.clip.precision import autocast_for
from lmmreg.clip.vision import encode_boundary
from lmmreg.config import Params
from lmmreg.data.images import load_rgb
from lmmreg.data.manifest import Record, load_manifest, resolve_image_root
from lmmreg.errors import InputError
from lmmreg.progress import progress

log = logging.getLogger(__name__)


class ManifestImages(Dataset):
    """(image tensor, row) for every (record, view) pair; view 0 is the clean view, 1..K augmented ones."""

    def __init__(self, root: Path, records: list[Record], transform, *, items: list[tuple[int, int]] | None = None,
                 augment=None, seed: int = 0):
        self.root, self.records, self.transform, self.augment, self.seed = root, records, transform, augment, seed
        self.items = items if items is not None else [(i, 0) for i in range(len(records))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        k, view = self.items[i]
        img = load_rgb(self.root / self.records[k].path)
        if view == 0:
            return self.transform(img), i
        # The view depends on (seed, image, view) only, never on worker count or order.
        with torch.random.fork_rng(devices=[]):
            key = f"{self.seed}|{self.records[k].id}|{view}".encode()
            torch.manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
            return self.augment(img), i


def default_workers() -> int:
    return min(8, max(0, (os.cpu_count() or 1) - 1))


@torch.inference_mode()
def extract_features(model, transform, root: Path, records: list[Record], *, unlocked_groups: int,
                     items: list[tuple[int, int]] | None = None, augment=None, seed: int = 0, batch_size: int = 64,
                     workers: int = 2, device: str = "cpu", precision: str = "auto") -> torch.Tensor:
    """Boundary features for each (record, view) of `items` (default: every record, clean view), in that order."""
    data = ManifestImages(root, records, transform, items=items, augment=augment, seed=seed)
    cuda = torch.device(device).type == "cuda"
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, pin_memory=cuda, shuffle=False,
                        prefetch_factor=4 if workers > 0 else None, persistent_workers=False)
    autocast, precision = autocast_for(device, precision)
    visual = model.visual
    if cuda:  # channels-last lets cuDNN run the patch-embedding convolution without a layout copy
        visual = visual.to(memory_format=torch.channels_last)
    out: torch.Tensor | None = None
    bar = progress(total=len(data), unit="img", desc=f"image features ({precision})")
    for images, idx in loader:
        images = images.to(device, non_blocking=True)
        if cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast:
            feats = encode_boundary(visual, images, unlocked_groups).float().cpu()
        if out is None:  # preallocate once the shape is known; rows are placed by index, so order is kept
            out = torch.empty((len(data), *feats.shape[1:]), dtype=feats.dtype)
        out[idx] = feats
        bar.update(len(idx))
    bar.close()
    if out is None:
        raise InputError("no images to encode")
    return out


def main(params: Params, *, raw: Path, manifest: Path, out: Path, device: str = "cpu", workers: int = 2,
         batch_size: int = 64, precision: str = "auto") -> None:
    cfg = params.clip
    model, preprocess, _ = build_clip(cfg, device=device)  # first: missing weights fail before any work
    records, _ = load_manifest(manifest)
    raw = resolve_image_root(manifest, raw)
    run = dict(unlocked_groups=cfg.unlocked_groups, batch_size=batch_size, workers=workers, device=device,
               precision=precision)
    feats = extract_features(model, preprocess, raw, records, **run)
    is_test = torch.tensor([r.split == "test" for r in records])
    tensors = {"feat": feats, "is_test": is_test}
    is_val = torch.tensor([r.split == "val" for r in records])
    if is_val.any():  # the dataset's own validation split (CoOp's format): neither trained on nor tested
        tensors["is_val"] = is_val
    if cfg.augment_views > 0:
        train_rows = [k for k, r in enumerate(records) if r.split == "train"]
        items = [(k, v) for k in train_rows for v in range(1, cfg.augment_views + 1)]
        views = extract_features(model, preprocess, raw, records, items=items, augment=build_train_transform(model),
                                 seed=cfg.init_seed, **run)
        aug = torch.zeros((len(records), cfg.augment_views, *feats.shape[1:]))  # [N, K, ...]
        aug[torch.tensor(train_rows)] = views.view(len(train_rows), cfg.augment_views, *feats.shape[1:])
        tensors.update(aug=aug, has_aug=torch.tensor([r.split == "train" for r in records]))
    meta = {**clip_meta(cfg), "unlocked_groups": cfg.unlocked_groups, "augment_views": cfg.augment_views,
            "preprocess": repr(preprocess), "precision": autocast_for(device, precision)[1], "device": device,
            # where the trainable tail starts and CLIP's temperature: the train stage of a method that never runs
            # the text tower reads them here instead of building CLIP (stages/train.py load_inputs)
            "tail_init": {"proj": model.visual.proj.detach().cpu().clone(),
                          "logit_scale": model.logit_scale.exp().item()}}
    save_artifact(out, Artifact([r.id for r in records], torch.tensor([r.label for r in records]), tensors, meta))
    log.info("features %s for %d images (+%d augmented views each for training) -> %s", tuple(feats.shape[1:]),
             len(records), cfg.augment_views, out)


def cli() -> None:
    parser = stage_parser(__doc__)
    for name in ("raw", "manifest", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    add_compute_args(parser, gpu_batch=512, cpu_batch=64, workers=default_workers(),
                     workers_help="image-decoding processes")
    run_stage(lambda a, p: main(p, raw=a.raw, manifest=a.manifest, out=a.out, device=a.device, workers=a.workers,
                                batch_size=batch_size(a), precision=a.precision), parser)


if __name__ == "__main__":
    cli()
