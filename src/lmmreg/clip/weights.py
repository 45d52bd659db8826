"""Where a CLIP's weights come from, found before any work is done: a checkpoint file, a pretrained tag in the
local caches, or a download where one is allowed and possible; else :class:`WeightsNotFoundError`, naming the file
and how to fetch it. A checkpoint saved here carries a sidecar that says which architecture it was trained as."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lmmreg.clip.arch import check_clip_config, looks_like_path, register_model_configs
from lmmreg.config import ClipConfig
from lmmreg.errors import InputError
from lmmreg.network import offline, probe_host, weights_host
from lmmreg.preflight import MISSING, OK, WARN, Verdict

log = logging.getLogger(__name__)

# Where downloaded weights live besides open_clip's defaults; not in params.yaml (it changes no result).
CACHE_ENV = "LMMREG_CLIP_CACHE"
# A pretrained tag's preprocessing keys -> open_clip.create_model_and_transforms' arguments
PREPROCESS_KEYS = {"mean": "image_mean", "std": "image_std", "interpolation": "image_interpolation",
                   "resize_mode": "image_resize_mode"}


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights that are not on this machine and cannot be downloaded; says how to fetch them."""


# ------------------------------------------------------------------------------------------ checkpoint sidecar

CHECKPOINT_FORMAT = "lmmreg-clip-checkpoint/1"


def checkpoint_meta_path(path: str | os.PathLike) -> Path:
    """The JSON beside a checkpoint that says what it is: `clip.pt` -> `clip.json`."""
    return Path(path).with_suffix(".json")


def save_clip_checkpoint(model: nn.Module, path: str | os.PathLike, *, arch: str, made_by: dict) -> dict:
    """Save a state dict open_clip loads by path, and beside it the architecture it was trained as.

    A state dict does not record the activation: a GELU-trained file loads silently into a `-quickgelu`
    architecture. The sidecar records the architecture name and its QuickGELU setting, and `resolve_weights`
    refuses a mismatch.
    """
    import open_clip

    register_model_configs()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    meta = {"format": CHECKPOINT_FORMAT, "arch": arch,
            "quick_gelu": bool((open_clip.get_model_config(arch) or {}).get("quick_gelu", False)),
            "open_clip": open_clip.__version__, "torch": torch.__version__, **made_by}
    checkpoint_meta_path(path).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta


def read_checkpoint_meta(path: str | os.PathLike) -> dict | None:
    """The sidecar of a checkpoint saved by :func:`save_clip_checkpoint`, or None for any other file."""
    meta_path = checkpoint_meta_path(path)
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{meta_path}: not valid JSON ({e})") from None
    return meta if isinstance(meta, dict) and meta.get("format") == CHECKPOINT_FORMAT else None


def check_checkpoint_arch(cfg: ClipConfig, path: Path) -> None:
    """Refuse a checkpoint whose recorded architecture (name or QuickGELU) differs from `clip.model`."""
    import open_clip

    meta = read_checkpoint_meta(path)
    if meta is None:
        log.warning("%s: no %s beside it, so its architecture (and QuickGELU) cannot be checked against "
                    "clip.model %s", path, checkpoint_meta_path(path).name, cfg.model)
        return
    want_quick = bool((open_clip.get_model_config(cfg.model) or {}).get("quick_gelu", False))
    if meta.get("arch") != cfg.model or bool(meta.get("quick_gelu")) != want_quick:
        raise InputError(
            f"clip.pretrained: {path} was trained as {meta.get('arch')} (quick_gelu={meta.get('quick_gelu')}), "
            f"but clip.model is {cfg.model} (quick_gelu={want_quick}); set clip.model: {meta.get('arch')}")


# ------------------------------------------------------------------------------------------ finding weights


@dataclass(frozen=True)
class Weights:
    """Where a model's weights come from: a local file (or None for random init) and the tag's preprocessing."""

    path: str | None
    source: str  # "random-init", "file", "cache" or "download"
    preprocess: dict = field(default_factory=dict)


def _cache_dirs(cache_dir: str | os.PathLike | None) -> list[str | None]:
    dirs = [cache_dir or os.environ.get(CACHE_ENV)]
    return [str(d) for d in dirs if d] + [None]  # None = the library's own default location


def find_cached_weights(tag_cfg: dict, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The local file open_clip would load for a pretrained tag, looked up without any network access.

    Honours the places open_clip downloads to: the Hugging Face hub cache (`cache_dir`, else `HF_HUB_CACHE` /
    `HF_HOME`) for `hf_hub` weights, and `cache_dir` or `~/.cache/clip` for plain URLs.
    """
    if tag_cfg.get("file"):
        return tag_cfg["file"] if os.path.isfile(tag_cfg["file"]) else None
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo_id, filename = os.path.split(hub)
        filename = filename or HF_WEIGHTS_NAME
        names = [filename[:-4] + ".safetensors"] if filename.endswith((".bin", ".pth")) else []
        names = ([HF_SAFE_WEIGHTS_NAME] if filename == HF_WEIGHTS_NAME else names) + [filename]
        for d in _cache_dirs(cache_dir):
            for name in names:
                hit = try_to_load_from_cache(repo_id, name, cache_dir=d)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return hit
    url = tag_cfg.get("url", "")
    if url:
        for d in _cache_dirs(cache_dir):
            candidate = os.path.join(d or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
            if os.path.isfile(candidate):
                return candidate
    return None


def fetch_hint(model: str, tag: str, tag_cfg: dict, cache_dir: str | os.PathLike | None) -> str:
    """The commands that fetch a tag's weights on a machine with internet, one a line."""
    lines = []
    if tag_cfg.get("hf_hub"):
        repo_id, filename = os.path.split(tag_cfg["hf_hub"])
        target = f" --cache-dir {cache_dir}" if cache_dir else ""
        lines.append(f"  huggingface-cli download {repo_id} {filename or 'open_clip_pytorch_model.bin'}{target}")
    if tag_cfg.get("url"):
        d = cache_dir or "~/.cache/clip"
        lines.append(f"  curl -L --create-dirs -o {d}/{os.path.basename(tag_cfg['url'])} {tag_cfg['url']}")
    lines.append("  or set clip.pretrained to the path of a checkpoint you already have")
    return "\n".join(lines)


def pretrained_tag_cfg(cfg: ClipConfig) -> dict:
    """open_clip's entry for `clip.pretrained` as a tag (where to download, preprocessing); {} for a path or none."""
    if not cfg.pretrained or looks_like_path(cfg.pretrained) or os.path.isfile(cfg.pretrained):
        return {}
    import open_clip

    register_model_configs()
    return open_clip.get_pretrained_cfg(cfg.model, cfg.pretrained) or {}


def resolve_weights(cfg: ClipConfig, *, cache_dir: str | os.PathLike | None = None,
                    download: bool | None = None) -> Weights:
    """Find the weights for `cfg` before any work is done, downloading only if allowed and possible.

    `download=None` downloads unless an offline switch is set (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE,
    LMMREG_OFFLINE) or the host to download from does not answer within seconds (:func:`lmmreg.network.probe_host`).
    Missing weights raise :class:`WeightsNotFoundError` naming the file and how to fetch it.
    """
    import open_clip

    check_clip_config(cfg)
    if not cfg.pretrained:
        return Weights(None, "random-init")
    if looks_like_path(cfg.pretrained) or os.path.isfile(cfg.pretrained):
        path = Path(cfg.pretrained).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"clip.pretrained: checkpoint file {path} not found")
        check_checkpoint_arch(cfg, path)
        return Weights(str(path), "file")
    tag_cfg = open_clip.get_pretrained_cfg(cfg.model, cfg.pretrained)
    preprocess = {k: tag_cfg[k] for k in PREPROCESS_KEYS if k in tag_cfg}
    hit = find_cached_weights(tag_cfg, cache_dir)
    if hit:
        return Weights(hit, "cache", preprocess)
    wanted = tag_cfg.get("hf_hub") or tag_cfg.get("url") or tag_cfg.get("file")
    why = "offline mode is set" if download is False or (download is None and offline()) else ""
    if download is None and not why:
        host, port = weights_host(tag_cfg)
        problem = probe_host(host, port)
        why = f"offline: {host}:{port} is unreachable ({problem})" if problem else ""
    download = not why
    if download:
        try:
            log.info("downloading %s/%s weights (%s)", cfg.model, cfg.pretrained, wanted)
            path = open_clip.download_pretrained(tag_cfg, cache_dir=str(cache_dir) if cache_dir else None)
            if path and os.path.isfile(path):
                return Weights(path, "download", preprocess)
            why = "the download returned no file"
        except Exception as e:  # any network / hub failure ends in the same clear message below
            why = f"download failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    raise WeightsNotFoundError(
        f"clip.pretrained: weights {cfg.model}/{cfg.pretrained} ({wanted}) are not in the local caches "
        f"({', '.join(d or 'default' for d in _cache_dirs(cache_dir))}) and cannot be downloaded ({why}). "
        f"Fetch them on a machine with internet:\n{fetch_hint(cfg.model, cfg.pretrained, tag_cfg, cache_dir)}"
    )


def preflight(cfg: ClipConfig, *, root: Path, pretrain_enabled: bool = False) -> Verdict:
    """Doctor's check: the weights on this machine, or how to get them; never downloads. A relative checkpoint path
    is under `root`; with `pretrain_enabled` one under models/clip_pretrain is the pretrain_clip stage's to write."""
    pretrained = Path(cfg.pretrained).expanduser()
    if cfg.pretrained and not pretrained.is_absolute() and (root / pretrained).is_file():
        cfg = dataclasses.replace(cfg, pretrained=str(root / pretrained))
    elif cfg.pretrained and pretrain_enabled and not pretrained.is_absolute() and \
            pretrained.parts[:2] == ("models", "clip_pretrain"):
        return OK, f"{cfg.model}: written by the pretrain_clip stage (demo)", ""
    try:
        w = resolve_weights(cfg, download=False)
    except WeightsNotFoundError as e:
        first, *fetch = str(e).split("\n")
        tag_cfg = pretrained_tag_cfg(cfg)
        if tag_cfg:
            host, port = weights_host(tag_cfg)
            problem = probe_host(host, port)
            if problem is None:
                return (WARN, f"{cfg.model}/{cfg.pretrained}: not in the local caches; {host} is reachable, the first "
                              "CLIP stage downloads them",
                        "to fetch them now: " + "\n".join(line.strip() for line in fetch))
            return (MISSING, f"{cfg.model}/{cfg.pretrained}: not in the local caches, and offline ({host}:{port}: "
                             f"{problem})", "\n".join(line.strip() for line in fetch))
        return MISSING, first, "\n".join(line.strip() for line in fetch) or \
            "set clip.pretrained to a checkpoint that exists, or to an open_clip tag (docs/clip.md)"
    except (ValueError, OSError) as e:
        return MISSING, str(e).splitlines()[0], "fix clip.model / clip.pretrained (docs/clip.md)"
    return OK, (f"{cfg.model}/{cfg.pretrained}: {w.source} {w.path}" if w.path else
                f"{cfg.model}: random init (no weights needed)"), ""
