"""Stage `features@<dataset>`: frozen CLIP image features at the trainable boundary, computed once.

    python -m lmmreg.stages.features --raw data/raw/demo --manifest data/prepared/demo \
        --out data/features/demo.pt

`clip.unlocked_groups: 1` caches the pooled `ln_post` class token [N, width] (only `visual.proj`
trains, as in the paper); `2` caches the tokens entering the last block [N, T, width].
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lmmreg.artifacts import Artifact, save_artifact
from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params
from lmmreg.data.images import load_rgb
from lmmreg.data.manifest import Record, load_manifest, resolve_image_root
from lmmreg.encoders import build_clip, clip_meta, encode_boundary

log = logging.getLogger(__name__)


class ManifestImages(Dataset):
    def __init__(self, root: Path, records: list[Record], transform):
        self.root, self.records, self.transform = root, records, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_rgb(self.root / self.records[i].path)), i


@torch.inference_mode()
def extract_features(model, preprocess, root: Path, records: list[Record], *, unlocked_groups: int,
                     batch_size: int = 64, workers: int = 2, device: str = "cpu") -> torch.Tensor:
    loader = DataLoader(ManifestImages(root, records, preprocess), batch_size=batch_size, num_workers=workers,
                        pin_memory=device.startswith("cuda"), shuffle=False)
    out: torch.Tensor | None = None
    bar = tqdm(total=len(records), unit="img", desc="image features")
    for images, idx in loader:
        feats = encode_boundary(model.visual, images.to(device, non_blocking=True), unlocked_groups).float().cpu()
        if out is None:  # preallocate once the shape is known; rows are placed by index, so order is kept
            out = torch.empty((len(records), *feats.shape[1:]), dtype=feats.dtype)
        out[idx] = feats
        bar.update(len(idx))
    bar.close()
    return out


def main(params: Params, *, raw: Path, manifest: Path, out: Path, device: str = "cpu", workers: int = 2) -> None:
    records, _ = load_manifest(manifest)
    raw = resolve_image_root(manifest, raw)
    model, preprocess, _ = build_clip(params.clip, device=device)
    feats = extract_features(model, preprocess, raw, records, unlocked_groups=params.clip.unlocked_groups,
                             workers=workers, device=device)
    is_test = torch.tensor([r.split == "test" for r in records])
    meta = {**clip_meta(params.clip), "unlocked_groups": params.clip.unlocked_groups,
            "preprocess": repr(preprocess)}
    save_artifact(out, Artifact([r.id for r in records], torch.tensor([r.label for r in records]),
                                {"feat": feats, "is_test": is_test}, meta))
    log.info("features %s for %d images -> %s", tuple(feats.shape[1:]), len(records), out)


def cli() -> None:
    parser = stage_parser(__doc__)
    for name in ("raw", "manifest", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=2)
    run_stage(lambda a, p: main(p, raw=a.raw, manifest=a.manifest, out=a.out, device=a.device,
                                workers=a.workers), parser)


if __name__ == "__main__":
    cli()
