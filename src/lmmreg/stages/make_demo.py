"""Stage `make_demo`: generate the synthetic demo dataset (the default `dvc repro` works offline on it).

    python -m lmmreg.stages.make_demo --out data/raw/demo
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import DemoConfig
from lmmreg.data.demo import generate_demo


def main(cfg: DemoConfig, *, out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)  # a stale class folder from a larger n_classes must not survive
    return generate_demo(cfg, out)


def cli() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True)
    run_stage(lambda a, p: main(p.demo, out=a.out), parser)


if __name__ == "__main__":
    cli()
