"""The whole report from a snapshot: tables.{md,csv,tex}, per_class.csv, fig2.{png,svg} and study/."""

from __future__ import annotations

from pathlib import Path

from lmmreg.config import Params
from lmmreg.report.cells import per_class_delta
from lmmreg.report.figures import plot_fig2
from lmmreg.report.snapshot import Snapshot
from lmmreg.report.study_section import write_study
from lmmreg.report.tables import build_tables, write_csv


def build_report(snap: Snapshot, params: Params, classes: dict[str, list[str]], out: Path,
                 pretrain: dict | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    md, rows, tex = build_tables(snap, params, classes, pretrain)
    (out / "tables.md").write_text(md)
    write_csv(rows, out / "tables.csv")
    (out / "tables.tex").write_text(tex)
    with (out / "per_class.csv").open("w", newline="") as f:
        f.write("dataset,class,finetune,lmm_reg,delta\n")
        for d in params.datasets:
            for c, a, b, x in per_class_delta(snap, d, classes.get(d, [])):
                f.write(f"{d},\"{c}\",{a:.4f},{b:.4f},{x:.4f}\n")
    plot_fig2(snap, params, out / "fig2.png", out / "fig2.svg")
    write_study(snap, params, classes, out / "study")
