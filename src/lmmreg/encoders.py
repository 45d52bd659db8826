"""CLIP through open_clip: building the model (weights found before any work), encoding text fast,
caching image features at the trainable boundary, and the trainable tail that continues from that cache.

The boundary follows open_clip's `lock_image_tower(unlocked_groups=g)`:
  g = 1: only `visual.proj` trains. Cache: the pooled `ln_post` class token, [N, width].
  g = 2: the last residual block and `ln_post` train too. Cache: tokens entering the last block, [N, T, width].
`VisionTail(g)` applied to the cache equals the rest of `model.visual` (tests/test_equivalence.py proves
logits and gradients). Text is encoded sorted by length and padded only to the longest text of each batch,
which equals 77-token padding for CLIP's causal text tower (tests/test_encoders.py proves it).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from lmmreg.config import ClipConfig

log = logging.getLogger(__name__)

_REGISTERED = False
# Where downloaded weights live besides open_clip's defaults; not in params.yaml (it changes no result).
CACHE_ENV = "LMMREG_CLIP_CACHE"
_OFFLINE_ENVS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "LMMREG_OFFLINE")
_PREPROCESS_KEYS = {"mean": "image_mean", "std": "image_std", "interpolation": "image_interpolation",
                    "resize_mode": "image_resize_mode"}


def _open_clip():
    """open_clip, imported at first use: it brings transformers, timm and torchvision (~7 s on 2 cores), which a
    process that never builds a CLIP (the plan, summarize and report stages import this module) need not pay."""
    import open_clip

    return open_clip


@functools.cache
def _open_clip_dir() -> str:
    """open_clip's package folder (the log filter asks it for every record while a model is built)."""
    return str(Path(_open_clip().__file__).parent)


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights that are not on this machine and cannot be downloaded; says how to fetch them."""


def register_model_configs() -> None:
    """Make the project's own open_clip architectures (the tiny demo CLIP) known to open_clip."""
    global _REGISTERED
    if not _REGISTERED:
        _open_clip().add_model_config(Path(str(resources.files("lmmreg") / "model_configs")))
        _REGISTERED = True


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.startswith((".", "~")) or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


def check_clip_config(cfg: ClipConfig) -> None:
    """Refuse combinations that build a model different from the one the weights were trained as."""
    register_model_configs()
    if cfg.model not in _open_clip().list_models():
        raise ValueError(f"clip.model: {cfg.model!r} is not an open_clip architecture "
                         f"(see open_clip.list_models(); the paper uses ViT-L-14-quickgelu)")
    if cfg.augment_views < 0:
        raise ValueError(f"clip.augment_views: must be >= 0, got {cfg.augment_views}")
    if not cfg.pretrained or _looks_like_path(cfg.pretrained):
        return
    model_cfg = _open_clip().get_model_config(cfg.model) or {}
    tag_cfg = _open_clip().get_pretrained_cfg(cfg.model, cfg.pretrained)
    base = cfg.model.removesuffix("-quickgelu")
    if not tag_cfg:  # the tag may exist for the twin architecture only (openai is listed under both)
        tag_cfg = _open_clip().get_pretrained_cfg(base, cfg.pretrained)
    if not tag_cfg:
        tags = _open_clip().list_pretrained_tags_by_model(cfg.model)
        raise ValueError(f"clip.pretrained: {cfg.pretrained!r} is neither a pretrained tag of {cfg.model} "
                         f"(known: {tags}) nor a checkpoint path")
    # OpenAI's weights (and a few others) were trained with QuickGELU; open_clip only warns on a mismatch.
    wants_quick = bool(tag_cfg.get("quick_gelu", False)) or cfg.pretrained == "openai"
    has_quick = bool(model_cfg.get("quick_gelu", False))
    if wants_quick and not has_quick:
        raise ValueError(
            f"clip.model: {cfg.model!r} with clip.pretrained: {cfg.pretrained} builds GELU, but these weights were "
            f"trained with QuickGELU (open_clip only warns). Use {cfg.model}-quickgelu."
        )
    if has_quick and not wants_quick:
        raise ValueError(f"clip.model: {cfg.model!r} builds QuickGELU, but {cfg.pretrained} weights were trained "
                         f"with GELU (open_clip only warns). Use {base}.")


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
    register_model_configs()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    meta = {"format": CHECKPOINT_FORMAT, "arch": arch,
            "quick_gelu": bool((_open_clip().get_model_config(arch) or {}).get("quick_gelu", False)),
            "open_clip": _open_clip().__version__, "torch": torch.__version__, **made_by}
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
        raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
    return meta if isinstance(meta, dict) and meta.get("format") == CHECKPOINT_FORMAT else None


def check_checkpoint_arch(cfg: ClipConfig, path: Path) -> None:
    """Refuse a checkpoint whose recorded architecture (name or QuickGELU) differs from `clip.model`."""
    meta = read_checkpoint_meta(path)
    if meta is None:
        log.warning("%s: no %s beside it, so its architecture (and QuickGELU) cannot be checked against "
                    "clip.model %s", path, checkpoint_meta_path(path).name, cfg.model)
        return
    want_quick = bool((_open_clip().get_model_config(cfg.model) or {}).get("quick_gelu", False))
    if meta.get("arch") != cfg.model or bool(meta.get("quick_gelu")) != want_quick:
        raise ValueError(
            f"clip.pretrained: {path} was trained as {meta.get('arch')} (quick_gelu={meta.get('quick_gelu')}), "
            f"but clip.model is {cfg.model} (quick_gelu={want_quick}); set clip.model: {meta.get('arch')}")


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


def _fetch_hint(model: str, tag: str, tag_cfg: dict, cache_dir: str | os.PathLike | None) -> str:
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


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in _OFFLINE_ENVS)


def weights_host(tag_cfg: dict) -> tuple[str, int]:
    """(host, port) a download of these weights would connect to first: the HTTPS proxy if one is set, else the
    hub (`HF_ENDPOINT`, default huggingface.co) or the URL's host."""
    from urllib.parse import urlsplit

    proxy = next((os.environ[v] for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(v)), "")
    if proxy:
        u = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return u.hostname or "", u.port or 3128
    if tag_cfg.get("hf_hub"):
        u = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    else:
        u = urlsplit(tag_cfg.get("url", ""))
    return u.hostname or "", u.port or (80 if u.scheme == "http" else 443)


def probe_host(host: str, port: int, timeout_s: float = 3.0) -> str | None:
    """None if a TCP connection to host:port opens within `timeout_s` (name lookup included), else why not.

    The hub client retries an unreachable host for about 90 s before it gives up; this says it in seconds."""
    import socket
    import threading

    result: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            result.append(None)
        except OSError as e:
            result.append(f"{type(e).__name__}: {e}")

    # getaddrinfo has no timeout of its own; a thread bounds a hanging name lookup too.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    return result[0] if result else f"no answer within {timeout_s:.0f} s"


def pretrained_tag_cfg(cfg: ClipConfig) -> dict:
    """open_clip's entry for `clip.pretrained` as a tag (where to download, preprocessing); {} for a path or none."""
    if not cfg.pretrained or _looks_like_path(cfg.pretrained) or os.path.isfile(cfg.pretrained):
        return {}
    register_model_configs()
    return _open_clip().get_pretrained_cfg(cfg.model, cfg.pretrained) or {}


def resolve_weights(cfg: ClipConfig, *, cache_dir: str | os.PathLike | None = None,
                    download: bool | None = None) -> Weights:
    """Find the weights for `cfg` before any work is done, downloading only if allowed and possible.

    `download=None` downloads unless an offline switch is set (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE,
    LMMREG_OFFLINE) or the host to download from does not answer within seconds (:func:`probe_host`).
    Missing weights raise :class:`WeightsNotFoundError` naming the file and how to fetch it.
    """
    check_clip_config(cfg)
    if not cfg.pretrained:
        return Weights(None, "random-init")
    if _looks_like_path(cfg.pretrained) or os.path.isfile(cfg.pretrained):
        path = Path(cfg.pretrained).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"clip.pretrained: checkpoint file {path} not found")
        check_checkpoint_arch(cfg, path)
        return Weights(str(path), "file")
    tag_cfg = _open_clip().get_pretrained_cfg(cfg.model, cfg.pretrained)
    preprocess = {k: tag_cfg[k] for k in _PREPROCESS_KEYS if k in tag_cfg}
    hit = find_cached_weights(tag_cfg, cache_dir)
    if hit:
        return Weights(hit, "cache", preprocess)
    wanted = tag_cfg.get("hf_hub") or tag_cfg.get("url") or tag_cfg.get("file")
    why = "offline mode is set" if download is False or (download is None and _offline()) else ""
    if download is None and not why:
        host, port = weights_host(tag_cfg)
        problem = probe_host(host, port)
        why = f"offline: {host}:{port} is unreachable ({problem})" if problem else ""
    download = not why
    if download:
        try:
            log.info("downloading %s/%s weights (%s)", cfg.model, cfg.pretrained, wanted)
            path = _open_clip().download_pretrained(tag_cfg, cache_dir=str(cache_dir) if cache_dir else None)
            if path and os.path.isfile(path):
                return Weights(path, "download", preprocess)
            why = "the download returned no file"
        except Exception as e:  # any network / hub failure ends in the same clear message below
            why = f"download failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    raise WeightsNotFoundError(
        f"clip.pretrained: weights {cfg.model}/{cfg.pretrained} ({wanted}) are not in the local caches "
        f"({', '.join(d or 'default' for d in _cache_dirs(cache_dir))}) and cannot be downloaded ({why}). "
        f"Fetch them on a machine with internet:\n{_fetch_hint(cfg.model, cfg.pretrained, tag_cfg, cache_dir)}"
    )


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
    weights = resolve_weights(cfg, cache_dir=cache_dir)
    torch.manual_seed(cfg.init_seed)  # random init is part of the config, so it must be reproducible
    kwargs = {_PREPROCESS_KEYS[k]: v for k, v in weights.preprocess.items()}
    try:
        with _open_clip_info_muted(random_init=not weights.path):
            model, _, preprocess = _open_clip().create_model_and_transforms(cfg.model, pretrained=weights.path,
                                                                         device=device, **kwargs)
            tokenizer = _open_clip().get_tokenizer(cfg.model)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        if weights.path is None or "size mismatch" in str(e):
            raise  # not a damaged file: a wrong architecture says so itself
        if "clip_pretrain" in Path(weights.path).parts:  # the pretrain_clip stage's output (the demo)
            fix = (f"restore it with `dvc checkout --force {Path(weights.path).parent}` or rebuild it with "
                   "`dvc repro -f pretrain_clip`")
        elif weights.source == "file":
            fix = "replace it with an intact copy"
        else:
            hint = _fetch_hint(cfg.model, cfg.pretrained, pretrained_tag_cfg(cfg), None)
            fix = f"delete it and fetch it again:\n{hint}"
        reason = str(e).splitlines()[0].split(". ")[0] if str(e) else "empty or cut short"
        raise ValueError(f"clip.pretrained: {weights.path} is unreadable, truncated or damaged "
                         f"({type(e).__name__}: {reason}); {fix}") from None
    model.eval()
    log.info("CLIP %s weights: %s%s", cfg.model, weights.source, f" ({weights.path})" if weights.path else "")
    return model, preprocess, tokenizer


def build_train_transform(model: nn.Module):
    """open_clip's own training augmentation (random resized crop, scale 0.9-1) for this model's preprocessing."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=True)


def clip_meta(cfg: ClipConfig) -> dict:
    return {"clip_model": cfg.model, "clip_pretrained": cfg.pretrained or "random-init",
            "clip_init_seed": cfg.init_seed, "open_clip": _open_clip().__version__}


def autocast_for(device: str | torch.device, precision: str = "auto"):
    """Autocast context for inference: bf16 (fp16 where bf16 is missing) on CUDA under "auto", fp32 on CPU."""
    dev = torch.device(device)
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if dev.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext(), "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(dev.type, dtype=dtype), precision


# ---------------------------------------------------------------------------------------------- text


@dataclass
class TextEmbeddings:
    emb: torch.Tensor  # [N, D] float32 on CPU, un-normalised as `encode_text` returns it
    n_tokens: torch.Tensor  # [N] tokens incl. start/end before truncation (capped at context + 1)
    truncated: torch.Tensor  # [N] bool: longer than the context (77), cut as open_clip's tokenizer cuts it
    trimmed: bool  # batches padded only to their longest text
    precision: str

    @property
    def n_truncated(self) -> int:
        return int(self.truncated.sum())


def _simple_tokenizer(tokenizer) -> bool:
    return isinstance(tokenizer, _open_clip().tokenizer.SimpleTokenizer) and tokenizer.reduction_fn is None


_WORKER_TOKENIZER = None


def _init_tokenizer_worker(tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _tokenize_chunk(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tokenize_texts(_WORKER_TOKENIZER, texts)


def tokenize_texts(tokenizer, texts: Sequence[str], *, workers: int = 0,
                   chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens exactly as `tokenizer(texts)` gives them [N, ctx], plus lengths [N] and truncated flags [N].

    For CLIP's BPE tokenizer the texts are tokenized once at ctx + 1: a token at position ctx means the
    text did not fit, and cutting there and ending with EOT is precisely what the tokenizer does at ctx.
    BPE runs in Python (~10k texts/s per core): `workers > 0` spreads chunks over processes so the GPU waits less.
    """
    texts = list(texts)
    if workers > 0 and len(texts) > chunk:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        parts = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
        # spawn, not fork: a fork after torch has started its OpenMP threads can hang the child
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_tokenizer_worker,
                                 initargs=(tokenizer,)) as pool:
            done = list(pool.map(_tokenize_chunk, parts))
        return tuple(torch.cat([d[k] for d in done]) for k in range(3))  # type: ignore[return-value]
    ctx = tokenizer.context_length
    if not _simple_tokenizer(tokenizer):
        tokens = tokenizer(texts)
        lengths = torch.full((len(texts),), tokens.shape[1])
        return tokens, lengths, torch.zeros(len(texts), dtype=torch.bool)
    wide = tokenizer(texts, context_length=ctx + 1)  # [N, ctx + 1]
    truncated = wide[:, ctx] != 0
    tokens = wide[:, :ctx].clone()
    tokens[truncated, ctx - 1] = tokenizer.eot_token_id
    nonzero = (tokens != 0).long()
    lengths = ctx - nonzero.flip(1).argmax(1)  # position of the last non-pad token + 1 (EOT is never 0)
    lengths = torch.where(truncated, torch.full_like(lengths, ctx + 1), lengths)
    return tokens, lengths, truncated


def can_trim_padding(model: nn.Module, tokenizer) -> bool:
    """True when padding to the batch's longest text equals padding to the full context.

    Holds for open_clip's `CLIP` text tower: a causal mask (no token sees the padding after it), pooling at
    EOT / argmax / first token, and CLIP's tokenizer (padding after EOT only).
    """
    return (isinstance(model, _open_clip().CLIP) and getattr(model, "attn_mask", None) is not None
            and getattr(model, "text_pool_type", "") in ("argmax", "eos", "first") and _simple_tokenizer(tokenizer))


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """[B, 77] tokens cut to the longest text of the batch ([B, L]); exact where `can_trim_padding` holds."""
    return tokens[:, :int((tokens != 0).sum(dim=1).max())]


def encode_text_tokens(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text` for tokens padded to any length L <= context: [B, L] -> [B, D].

    The same computation as open_clip's `CLIP.encode_text`, with the positional embedding and the causal
    mask cut to L; only valid where :func:`can_trim_padding` holds.
    """
    from open_clip.transformer import text_global_pool

    x = _text_transformer(model, model.token_embedding(tokens))  # [B, L, W]
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    return _text_project(model, x)  # [B, D]


def _text_transformer(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Token embeddings [B, L, W] -> ln_final(transformer(x + positions)), causal mask cut to L."""
    n = x.shape[1]
    cast = model.transformer.get_cast_dtype()
    x = x.to(cast) + model.positional_embedding[:n].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    return model.ln_final(x)


def _text_project(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return x


def encode_text_embeddings(model: nn.Module, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    """The text tower from token embeddings [B, L, W] (prompt learning replaces some of them), pooled at the
    EOT positions `eot` [B] -> [B, D]. Equals `encode_text_tokens` for `x = model.token_embedding(tokens)` where
    :func:`can_trim_padding` holds and the pool is at EOT (argmax / eos)."""
    x = _text_transformer(model, x)
    return _text_project(model, x[torch.arange(len(x), device=x.device), eot])


@torch.inference_mode()
def embed_texts(model, tokenizer, texts: Sequence[str], *, batch_size: int = 256, device: str | torch.device = "cpu",
                precision: str = "auto", trim: bool | None = None, progress: bool = True,
                workers: int = 0) -> TextEmbeddings:
    """CLIP text embeddings of `texts` in their order, batched by length (longest first); a text that occurs
    more than once is tokenized and encoded once.

    `trim=None` pads each batch only to its longest text wherever that is exact (:func:`can_trim_padding`);
    `precision="auto"` is bf16/fp16 autocast on CUDA and fp32 on CPU; `workers` tokenization processes.
    """
    from lmmreg.progress import progress as progress_bar

    texts = list(texts)
    pos: dict[str, int] = {}  # each distinct text once, first-seen order (the demo's 72k descriptions: 8k distinct)
    for t in texts:
        pos.setdefault(t, len(pos))
    if len(pos) < len(texts):
        enc = embed_texts(model, tokenizer, list(pos), batch_size=batch_size, device=device, precision=precision,
                          trim=trim, progress=progress, workers=workers)
        inverse = torch.tensor([pos[t] for t in texts], dtype=torch.long)
        return TextEmbeddings(enc.emb[inverse], enc.n_tokens[inverse], enc.truncated[inverse], enc.trimmed,
                              enc.precision)
    tokens, lengths, truncated = tokenize_texts(tokenizer, texts, workers=workers)
    trim = can_trim_padding(model, tokenizer) if trim is None else trim
    if trim and not can_trim_padding(model, tokenizer):
        raise ValueError(f"padding cannot be trimmed for {type(model).__name__} with {type(tokenizer).__name__}")
    dim = model.text_projection.shape[-1] if getattr(model, "text_projection", None) is not None else None
    ctx_mgr, precision = autocast_for(device, precision)
    order = torch.argsort(lengths, descending=True, stable=True)
    out: torch.Tensor | None = None
    bar = progress_bar(total=len(texts), unit="text", disable=not progress, desc="encode text")
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        batch = tokens[idx]
        if trim:
            batch = batch[:, :int(lengths[idx].clamp(max=tokens.shape[1]).max())]
        batch = batch.to(device, non_blocking=True)
        with ctx_mgr:
            emb = (encode_text_tokens(model, batch) if trim else model.encode_text(batch)).float().cpu()
        if out is None:
            out = torch.empty(len(texts), emb.shape[1])
        out[idx] = emb  # back to the caller's order
        bar.update(len(idx))
    bar.close()
    if out is None:
        out = torch.zeros(0, dim or 0)
    return TextEmbeddings(out, lengths, truncated, trim, precision)


def encode_texts(model, tokenizer, texts: Sequence[str], *, batch_size: int = 256,
                 device: str | torch.device = "cpu", progress: bool = True) -> torch.Tensor:
    """CLIP text embeddings (un-normalised, as `encode_text` returns them), [N, D] float32 on CPU."""
    return embed_texts(model, tokenizer, texts, batch_size=batch_size, device=device, progress=progress).emb


# --------------------------------------------------------------------------------------------- image


def _check_plain_vit(visual: nn.Module) -> None:
    if not isinstance(visual, _open_clip().transformer.VisionTransformer):
        raise NotImplementedError(f"feature caching supports open_clip ViTs, not {type(visual).__name__}")
    if visual.attn_pool is not None or visual.final_ln_after_pool:
        raise NotImplementedError("feature caching supports ViTs with ln_post before pooling and no attn_pool")


def _run_blocks(batch_first: bool, blocks: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Apply residual blocks to batch-first tokens [B, T, W], in the layout the blocks expect."""
    if not batch_first:
        x = x.transpose(0, 1)
    for blk in blocks:
        x = blk(x)
    return x if batch_first else x.transpose(0, 1)


def encode_boundary(visual: nn.Module, images: torch.Tensor, unlocked_groups: int) -> torch.Tensor:
    """Frozen part of the image tower: images [B, 3, H, W] -> cache entry ([B, W] or [B, T, W])."""
    _check_plain_vit(visual)
    x = visual._embeds(images)  # [B, T, W]
    blocks = visual.transformer.resblocks
    batch_first = getattr(visual.transformer, "batch_first", True)
    if unlocked_groups == 1:
        x = _run_blocks(batch_first, blocks, x)
        pooled, _ = visual._pool(x)  # ln_post then class token: [B, W]
        return pooled
    if unlocked_groups == 2:
        return _run_blocks(batch_first, blocks[:-1], x)  # [B, T, W]
    raise ValueError(f"clip.unlocked_groups: 1 or 2, got {unlocked_groups}")


class VisionTail(nn.Module):
    """The trainable end of `model.visual`, continuing from the boundary cache: returns x_i = f(I_i), [B, D]."""

    def __init__(self, visual: nn.Module, unlocked_groups: int):
        super().__init__()
        _check_plain_vit(visual)
        self.unlocked_groups = unlocked_groups
        self.proj = nn.Parameter(visual.proj.detach().clone())  # [W, D], initialised from CLIP's
        if unlocked_groups == 2:
            self.block = copy.deepcopy(visual.transformer.resblocks[-1])
            self.ln_post = copy.deepcopy(visual.ln_post)
            self.batch_first = getattr(visual.transformer, "batch_first", True)
            self.pool_type = visual.pool_type
        elif unlocked_groups != 1:
            raise ValueError(f"clip.unlocked_groups: 1 or 2, got {unlocked_groups}")

    @classmethod
    def from_proj(cls, proj: torch.Tensor) -> VisionTail:
        """The one-unlocked-group tail from `visual.proj` alone ([W, D], as `tail_init` saves it)."""
        tail = cls.__new__(cls)
        nn.Module.__init__(tail)
        tail.unlocked_groups = 1
        tail.proj = nn.Parameter(proj.detach().clone())
        return tail

    def forward(self, cached: torch.Tensor) -> torch.Tensor:
        return self.pre_projection(cached) @ self.proj

    def pre_projection(self, cached: torch.Tensor) -> torch.Tensor:
        """Everything before `proj`: the cache itself for 1 unlocked group, else the last block and ln_post, pooled."""
        if self.unlocked_groups == 1:
            return cached
        x = self.ln_post(_run_blocks(self.batch_first, [self.block], cached))  # [B, T, W]
        return x[:, 1:].mean(dim=1) if self.pool_type == "avg" else x[:, 0]  # [B, W]


class EmbeddingClassifier(nn.Module):
    """x = tail(input); logits = head(x). Returns both: the loss regularises x (Eq. 2)."""

    def __init__(self, tail: nn.Module, embed_dim: int, num_classes: int):
        super().__init__()
        self.tail = tail
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.tail(inputs)  # [B, D]
        return emb, self.head(emb)  # [B, D], [B, C]
