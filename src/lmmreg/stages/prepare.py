"""Stage `prepare@<dataset>`: raw images -> manifest (ids, labels, class names, split, sha256, size).

    python -m lmmreg.stages.prepare --dataset demo --raw data/raw/demo --out data/prepared/demo

Every image is decoded and checked before any expensive stage runs; see :mod:`lmmreg.data.checks`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params
from lmmreg.data.checks import check_items
from lmmreg.data.layouts import list_layout
from lmmreg.data.manifest import write_manifest

log = logging.getLogger(__name__)


def main(params: Params, *, dataset: str, raw: Path, out: Path) -> dict:
    src = params.source(dataset)
    items, classes = list_layout(src.layout, raw, src.options)
    records, report = check_items(items, classes, root=raw, cfg=params.prepare, expected=src.expected,
                                  dataset=dataset)
    write_manifest(records, classes, out)
    (out / "prepare_report.json").write_text(json.dumps(report, indent=1) + "\n")
    log.info("%s: %d train / %d test images, %d classes, %d skipped -> %s", dataset, report["counts"]["train"],
             report["counts"]["test"], len(classes), len(report["skipped"]), out)
    return report


def cli() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    run_stage(lambda a, p: main(p, dataset=a.dataset, raw=a.raw, out=a.out), parser)


if __name__ == "__main__":
    cli()
