"""Preflight: is everything the configured setting needs in place? Answers in seconds, before GPU time is spent.

    python -m lmmreg doctor                # or `make doctor`; --params configs/paper.yaml to check another file

Checks, each a line of the table with its fix (lmmreg.preflight.Check): every listed dataset's raw layout and
counts against `sources.<ds>.expected` (lmmreg.data.checks); the CLIP weights in the local caches, or the exact
fetch commands (lmmreg.clip.weights.preflight; offline is found out in seconds); the describer, by its backend's
own `preflight` (lmmreg.describe.backends: openai sends one real request with one real image); CUDA and its memory
against the CLIP model; free disk against the caches this setting will write; the MLflow store, reachable and
writable (lmmreg.tracking.health); the DVC remote, if one is configured. Exits 1 when anything is missing, 0 when
everything is ready (warnings, e.g. no CUDA for a CPU run, do not fail). It writes nothing.
"""

from __future__ import annotations

import argparse
import configparser
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lmmreg.config import ConfigError, Params, load_params
from lmmreg.data.checks import check_datasets
from lmmreg.preflight import MISSING, OK, WARN, Check

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0


# ---------------------------------------------------------------------------------------------------- weights


def check_weights(params: Params, root: Path) -> Check:
    """The CLIP weights on this machine, or how to get them (lmmreg.clip.weights.preflight); never downloads."""
    from lmmreg.clip.weights import preflight

    return Check("CLIP weights", *preflight(params.clip, root=root, pretrain_enabled=params.pretrain.enabled))


# ---------------------------------------------------------------------------------------------------- describer


def _sample_image(params: Params, root: Path) -> Path:
    """One real image of a listed dataset (the first listed image file); else a rendered demo-world scene."""
    from lmmreg.data.images import IMAGE_EXTENSIONS
    from lmmreg.data.layouts import list_layout

    for ds in params.datasets:
        raw = root / "data" / "raw" / ds
        try:
            items = list_layout(params.source(ds).layout, raw, params.source(ds).options).items
        except (OSError, ValueError):
            continue
        for it in items:
            if Path(it.path).suffix.lower() in IMAGE_EXTENSIONS and (raw / it.path).is_file():
                return raw / it.path
    from PIL import Image

    path = Path(tempfile.mkdtemp(prefix="lmmreg-doctor-")) / "probe.png"
    img = Image.new("RGB", (224, 224), (40, 110, 200))
    img.paste((230, 200, 40), (60, 60, 164, 164))  # a yellow square on blue: something to describe
    img.save(path)
    return path


def check_describer(params: Params, root: Path) -> Check:
    """The configured backend's own preflight (lmmreg.describe.backends): a real request, a cached model, a file."""
    from lmmreg.describe.backends import preflight

    cfg = params.describe
    name = f"describer {cfg.backend}" + (f" ({cfg.model})" if cfg.model else "")
    try:
        verdict = preflight(cfg, root=root, sample_image=lambda: _sample_image(params, root))
    except ConfigError as e:
        verdict = MISSING, str(e), "fix the describe section of params.yaml (docs/describe.md)"
    if verdict is None:
        return Check(name, OK, "built in (no model or server needed)")
    return Check(name, *verdict)


# ---------------------------------------------------------------------------------------------------- CUDA, disk


def gpu_need_bytes(model: str) -> int:
    """Rough peak for the CLIP stages: fp32 weights, plus activations of a GPU batch, plus CUDA's own overhead."""
    from lmmreg.clip.arch import model_dims

    return int(model_dims(model)["params"] * 4 * 2 + 2 * 2**30)


def check_cuda(params: Params) -> Check:
    import torch

    need = gpu_need_bytes(params.clip.model)
    if not torch.cuda.is_available() and params.clip.model.startswith("lmmreg-"):
        return Check("CUDA", OK, f"none visible; not needed for the demo's {params.clip.model}")
    if not torch.cuda.is_available():
        return Check("CUDA", WARN, f"no CUDA device visible: the CLIP stages would run on CPU ({params.clip.model})",
                     "check `nvidia-smi`, CUDA_VISIBLE_DEVICES and that torch is a CUDA build "
                     "(`python -c 'import torch; print(torch.version.cuda)'`)")
    free, total = torch.cuda.mem_get_info(0)
    name = torch.cuda.get_device_name(0)
    detail = (f"{torch.cuda.device_count()} device(s), {name}: {free / 2**30:.1f} of {total / 2**30:.1f} GiB free; "
              f"{params.clip.model} needs about {need / 2**30:.1f} GiB")
    if free < need:
        return Check("CUDA", MISSING, detail, "free the GPU (another process holds it) or pick a smaller clip.model")
    return Check("CUDA", OK, detail)


def disk_need_bytes(params: Params, counts: dict[str, int]) -> int:
    """What this setting writes under data/ (features, text embeddings, extracted frames) and the DVC cache's
    copy of it, plus CLIP weights to download."""
    from lmmreg.clip.arch import model_dims

    dims = model_dims(params.clip.model)
    per_feature = dims["width"] * (dims["tokens"] if params.clip.unlocked_groups == 2 else 1) * 4
    per_text = dims["embed_dim"] * 4 * (params.describe.n_descriptions + 1)
    total = 0
    for ds in params.datasets:
        n = counts.get(ds, 0)
        frames = 600_000 if params.source(ds).layout == "era" else 0  # a 640x640 PNG frame per video
        total += n * (per_feature * (1 + params.clip.augment_views) + per_text + frames + 4096)
    weights = dims["params"] * 4 if params.clip.pretrained and not params.pretrain.enabled else 0
    return 2 * total + weights  # the workspace copy and DVC's cache (without reflinks)


def check_disk(params: Params, root: Path, counts: dict[str, int]) -> Check:
    need = disk_need_bytes(params, counts)
    free = shutil.disk_usage(root).free
    detail = f"{free / 2**30:.1f} GiB free at {root}; this setting writes about {need / 2**30:.1f} GiB"
    if free < need:
        return Check("disk", MISSING, detail, "free space, or put the DVC cache elsewhere: "
                                              "`dvc cache dir /big/disk/dvc-cache` (and `dvc config cache.type "
                                              "reflink,symlink,copy`)")
    return Check("disk", OK, detail)


# ---------------------------------------------------------------------------------------------------- MLflow, DVC


def check_mlflow(root: Path) -> Check:
    """The tracking store this checkout logs to, reachable and writable (lmmreg.tracking.health)."""
    from lmmreg.tracking.health import check_store

    return Check("MLflow store", *check_store())


def _dvc_config(root: Path) -> configparser.ConfigParser:
    conf = configparser.ConfigParser(interpolation=None)
    conf.read([root / ".dvc" / "config", root / ".dvc" / "config.local"])
    return conf


def check_dvc_remote(root: Path) -> Check:
    """The default DVC remote, if one is configured: a folder that exists and is writable, or a host that answers."""
    from urllib.parse import urlsplit

    from lmmreg.network import probe_host

    conf = _dvc_config(root)
    remote = conf.get("core", "remote", fallback="")
    if not remote:
        return Check("DVC remote", OK, "none configured (optional: docs/team.md)")
    section = f"'remote \"{remote}\"'"
    url = conf.get(section, "url", fallback="")
    if not url:
        return Check("DVC remote", MISSING, f"core.remote is {remote!r} but it has no url",
                     f"dvc remote add -d {remote} <url>")
    u = urlsplit(url)
    if u.scheme in ("", "file") or len(u.scheme) == 1:  # a path (a Windows drive letter is no scheme)
        path = Path(u.path if u.scheme == "file" else url)
        path = path if path.is_absolute() else (root / ".dvc" / path).resolve()
        if not path.is_dir() or not os.access(path, os.W_OK):
            return Check("DVC remote", MISSING, f"{remote}: {path} is not a writable folder",
                         f"mount or create it, or `dvc remote modify {remote} url <path>`")
        return Check("DVC remote", OK, f"{remote}: {path} (writable)")
    endpoint = conf.get(section, "endpointurl", fallback="")
    target = urlsplit(endpoint) if endpoint else u
    host = target.hostname or ("s3.amazonaws.com" if u.scheme == "s3" else "")
    port = target.port or {"http": 80, "ssh": 22}.get(target.scheme, 443)
    problem = probe_host(host, port, PROBE_TIMEOUT_S)
    if problem:
        return Check("DVC remote", MISSING, f"{remote}: {url}: {host}:{port} unreachable ({problem})",
                     "check the network or the remote's url/endpointurl (`dvc remote list`)")
    return Check("DVC remote", OK, f"{remote}: {url} ({host}:{port} reachable; credentials not checked)")


# ---------------------------------------------------------------------------------------------------- the run


def _dataset_counts(params: Params, checks: list[Check]) -> dict[str, int]:
    """Images per dataset for the disk estimate: as found when the layout listed, else the paper's counts."""
    counts = {}
    for ds in params.datasets:
        exp = params.source(ds).expected
        counts[ds] = exp.get("train", 0) + exp.get("test", 0)
        if ds == "demo":
            counts[ds] = params.demo.n_classes * (params.demo.train_per_class + params.demo.test_per_class)
    counts.update({c.dataset: c.counts["train"] + c.counts["test"] for c in checks if c.dataset})
    return counts


# name (for --skip) -> check, given the params, the root and the lines so far (the disk estimate reads the datasets')
CHECKS: dict[str, Callable[[Params, Path, list[Check]], Check | list[Check]]] = {
    "datasets": lambda params, root, done: check_datasets(params, root),
    "weights": lambda params, root, done: check_weights(params, root),
    "describer": lambda params, root, done: check_describer(params, root),
    "cuda": lambda params, root, done: check_cuda(params),
    "disk": lambda params, root, done: check_disk(params, root, _dataset_counts(params, done)),
    "mlflow": lambda params, root, done: check_mlflow(root),
    "dvc": lambda params, root, done: check_dvc_remote(root),
}


def run_checks(params: Params, root: Path, *, skip: frozenset[str] = frozenset()) -> list[Check]:
    """Every check, each guarded so one crash is a MISSING line, not a traceback that hides the others."""
    checks: list[Check] = []
    for name, check in CHECKS.items():
        if name in skip:
            continue
        try:
            got = check(params, root, checks)
        except Exception as e:  # a bug or an environment surprise in one check must not hide the others
            log.debug("check %s failed", name, exc_info=True)
            got = Check(name, MISSING, f"the check itself failed: {type(e).__name__}: {e}")
        checks.extend(got if isinstance(got, list) else [got])
    return checks


def format_table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status:<8} {c.name:<{width}}  {c.detail}")
        for fix_line in c.fix.splitlines() if c.fix else []:
            lines.append(f"{'':<8} {'':<{width}}  -> {fix_line}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmmreg doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--root", type=Path, default=None, help="project root (default: the folder of dvc.yaml)")
    parser.add_argument("--skip", default="", help=f"comma-separated checks to skip: {', '.join(CHECKS)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from lmmreg.tracking import project_root

    root = (args.root or project_root()).resolve()
    skip = frozenset(s.strip() for s in args.skip.split(",") if s.strip())
    if skip - set(CHECKS):
        parser.error(f"--skip: unknown check(s) {sorted(skip - set(CHECKS))} (known: {', '.join(CHECKS)})")
    t0 = time.perf_counter()
    params_path = Path(args.params) if Path(args.params).is_absolute() else root / args.params
    try:
        params = load_params(params_path)
    except ConfigError as e:
        print(f"{MISSING:<8} params  {e}", file=sys.stdout)
        return 1
    checks = run_checks(params, root, skip=skip)
    missing = [c for c in checks if c.status == MISSING]
    print(format_table(checks))
    verdict = (f"{len(missing)} missing: " + ", ".join(c.name for c in missing)) if missing else "ready"
    print(f"\n{params_path.name}: {verdict} ({time.perf_counter() - t0:.1f} s)")
    return 1 if missing else 0
