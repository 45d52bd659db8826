"""A CLIP model from `clip:` in params.yaml: its weights found first (:mod:`lmmreg.clip.weights`), then open_clip
builds the model, its preprocessing and its tokenizer; the training augmentation and the description an artifact
records."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from lmmreg.clip.weights import PREPROCESS_KEYS, fetch_hint, pretrained_tag_cfg, resolve_weights
from lmmreg.config import ClipConfig
from lmmreg.errors import InputError

log = logging.getLogger(__name__)


@functools.cache
def _open_clip_dir() -> str:
    """open_clip's package folder (the log filter asks it for every record while a model is built)."""
    import open_clip

    return str(Path(open_clip.__file__).parent)


class _DropOpenClipInfo(logging.Filter):
    """Drops open_clip's INFO lines ("Parsing model identifier ...", about ten per model build): it logs on the root
    logger, so they cannot be silenced by its logger's name. With `random_init`, also its warning that no weights
    were loaded: random init was asked for (`clip.pretrained: ""`), and build_clip says so itself."""

    def __init__(self, random_init: bool):
        super().__init__()
        self.random_init = random_init

    def filter(self, record: logging.LogRecord) -> bool:
        if _open_clip_dir() not in record.pathname:
            return True
        if self.random_init and record.getMessage().startswith("No pretrained weights loaded"):
            return False
        return record.levelno >= logging.WARNING


@contextlib.contextmanager
def _open_clip_info_muted(*, random_init: bool = False):
    """While building a model: open_clip's INFO lines are dropped (its warnings pass); build_clip logs one line."""
    root, flt = logging.getLogger(), _DropOpenClipInfo(random_init)
    targets = [root, *root.handlers]
    for t in targets:
        t.addFilter(flt)
    try:
        yield
    finally:
        for t in targets:
            t.removeFilter(flt)


def build_clip(cfg: ClipConfig, *, device: str | torch.device = "cpu", cache_dir: str | os.PathLike | None = None):
    """Return (model, preprocess, tokenizer) in eval mode. `pretrained: ""` means random init (demo)."""
    import open_clip

    weights = resolve_weights(cfg, cache_dir=cache_dir)
    torch.manual_seed(cfg.init_seed)  # random init is part of the config, so it must be reproducible
    kwargs = {PREPROCESS_KEYS[k]: v for k, v in weights.preprocess.items()}
    try:
        with _open_clip_info_muted(random_init=not weights.path):
            model, _, preprocess = open_clip.create_model_and_transforms(cfg.model, pretrained=weights.path,
                                                                         device=device, **kwargs)
            tokenizer = open_clip.get_tokenizer(cfg.model)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        if weights.path is None or "size mismatch" in str(e):
            raise  # not a damaged file: a wrong architecture says so itself
        if "clip_pretrain" in Path(weights.path).parts:  # the pretrain_clip stage's output (the demo)
            fix = (f"restore it with `dvc checkout --force {Path(weights.path).parent}` or rebuild it with "
                   "`dvc repro -f pretrain_clip`")
        elif weights.source == "file":
            fix = "replace it with an intact copy"
        else:
            hint = fetch_hint(cfg.model, cfg.pretrained, pretrained_tag_cfg(cfg), None)
            fix = f"delete it and fetch it again:\n{hint}"
        reason = str(e).splitlines()[0].split(". ")[0] if str(e) else "empty or cut short"
        raise InputError(f"clip.pretrained: {weights.path} is unreadable, truncated or damaged "
                         f"({type(e).__name__}: {reason}); {fix}") from None
    model.eval()
    log.info("CLIP %s weights: %s%s", cfg.model, weights.source, f" ({weights.path})" if weights.path else "")
    return model, preprocess, tokenizer


def build_train_transform(model: nn.Module):
    """open_clip's own training augmentation (random resized crop, scale 0.9-1) for this model's preprocessing."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=True)


def clip_meta(cfg: ClipConfig) -> dict:
    """The CLIP an artifact was made with, for its metadata."""
    import open_clip

    return {"clip_model": cfg.model, "clip_pretrained": cfg.pretrained or "random-init",
            "clip_init_seed": cfg.init_seed, "open_clip": open_clip.__version__}
