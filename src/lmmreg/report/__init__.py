"""Tables 1-2, Fig. 2, statistics and the regime study (the alpha ablation one case of it), built from tracked runs.

Two steps, always both: (1) `collect_snapshot` picks runs out of MLflow by configuration (never by recency
alone) and writes them to a snapshot folder (runs.csv, histories.csv, predictions.jsonl); (2) `build_report`
reads only that snapshot. So `--from-snapshot` rebuilds byte-identical tables without `mlflow.db`.

Modules, each importing only those above it: paper (the paper's numbers), catalog (method names and table rows),
snapshot (collect, fill, read, write), cells (statistics per cell), banner, study (slices of the regime study),
figures, study_section (its Markdown and files), tables (Markdown, CSV, LaTeX), build (everything, from a snapshot).
"""

from lmmreg.report.banner import demo_banner, is_demo
from lmmreg.report.build import build_report
from lmmreg.report.catalog import BASELINES, COMPACTNESS, METHOD_TITLES, TABLE1, TABLE2
from lmmreg.report.paper import DATASET_TITLES, LITERATURE, PAPER
from lmmreg.report.snapshot import (
    FLOAT_FIELDS,
    INT_FIELDS,
    RUN_FIELDS,
    Snapshot,
    collect_snapshot,
    fill_from_snapshot,
    read_snapshot,
    write_snapshot,
)

__all__ = ["BASELINES", "COMPACTNESS", "DATASET_TITLES", "FLOAT_FIELDS", "INT_FIELDS", "LITERATURE", "METHOD_TITLES",
           "PAPER", "RUN_FIELDS", "TABLE1", "TABLE2", "Snapshot", "build_report", "collect_snapshot", "demo_banner",
           "fill_from_snapshot", "is_demo", "read_snapshot", "write_snapshot"]
