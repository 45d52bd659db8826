"""Stage `make_demo`: generate the synthetic demo dataset (the default `dvc repro` works offline on it).

    python -m lmmreg.stages.make_demo --out data/raw/demo

Where nothing reads the demo (`demo` not in `datasets` and `pretrain.enabled: false`, the paper's setting) it
writes a one-line note instead of rendering ~8,000 images, so the paper's `dvc repro` reaches its first real
stage (and its first missing server or weights) that much sooner.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lmmreg import threads
from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import DemoConfig, Params
from lmmreg.data.demo import generate_demo


def needed(params: Params) -> bool:
    """Does anything read the demo: a `demo` dataset, or the demo CLIP's pretraining (it evaluates on the demo)?"""
    return "demo" in params.datasets or params.pretrain.enabled


def main(cfg: DemoConfig, *, out: Path, render: bool = True) -> dict:
    if out.exists():
        shutil.rmtree(out)  # a stale class folder from a larger n_classes must not survive
    if not render:
        out.mkdir(parents=True)
        (out / "README.txt").write_text("Not rendered: `demo` is not in `datasets` and pretrain.enabled is false.\n")
        return {}
    return generate_demo(cfg, out, workers=threads.budget())  # painting processes: the bytes do not depend on it


def cli() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True)
    run_stage(lambda a, p: main(p.demo, out=a.out, render=needed(p)), parser)


if __name__ == "__main__":
    cli()
