"""Names: params under their dotted `-S` names, run names, and which params an experiment changed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from lmmreg.tracking.store import project_root


def flatten_params(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested params as MLflow params under dotted names (`train.lr`), lists and dicts as JSON."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten_params(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return out


def child_run_name(dataset: str, method: str, seed: int, alpha: float | None) -> str:
    """`demo · lmm_reg · seed 0 · α=0.01`; α only for the methods it plays a part in (None elsewhere)."""
    name = f"{dataset} · {method} · seed {seed}"
    return name if alpha is None else f"{name} · α={alpha:g}"


def committed_params(rev: str | None = None, *, root: Path | None = None) -> dict | None:
    """`params.yaml` as committed at `rev` (default: DVC's experiment baseline, else HEAD); None if unknown."""
    import yaml

    root = root or project_root()
    rev = rev or os.environ.get("DVC_EXP_BASELINE_REV") or "HEAD"
    try:
        text = subprocess.run(["git", "show", f"{rev}:./params.yaml"], cwd=root, capture_output=True, text=True,
                              check=True, timeout=30).stdout
        return yaml.safe_load(text)
    except (OSError, subprocess.SubprocessError, yaml.YAMLError):
        return None


def changed_params(current: dict, baseline: dict | None) -> dict[str, str]:
    """Dotted params whose value differs from the baseline's; keys the baseline lacks (defaults, or a key added
    since) are not counted, so only what someone set shows."""
    if baseline is None:
        return {}
    base = flatten_params(baseline)
    return {k: v for k, v in flatten_params(current).items() if k in base and base[k] != v}


def parent_run_name(dataset: str, changes: dict[str, str], *, limit: int = 3) -> str:
    """`<DVC experiment name or repro> · <dataset>[ · alpha=0.1, train.lr=0.001 +2]`."""
    name = f"{os.environ.get('DVC_EXP_NAME') or 'repro'} · {dataset}"
    if not changes:
        return name
    shown = [f"{k}={v if len(v) <= 24 else v[:21] + '...'}" for k, v in sorted(changes.items())[:limit]]
    more = f" +{len(changes) - limit}" if len(changes) > limit else ""
    return f"{name} · {', '.join(shown)}{more}"
