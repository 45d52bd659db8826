"""Published few-shot accuracies on CoOp's eleven, each with the protocol it was measured under (issue 32).

These are other papers' numbers on the real datasets, read from the authors' own logs; they sit beside this
project's re-run rows of `configs/coop11.yaml` as protocol-annotated rows and are never mixed with demo numbers
(`rows_for` refuses a dataset that is not one of the eleven). Every number is a top-1 test accuracy in % on CoOp's
test split; `shots` is K images per class (None: zero-shot). Where a protocol differs from this project's (another
backbone, one seed, a choice made on the test set) its `Protocol` says so, and the row must be read with it.

Sources (read, not re-run):
- Tip-Adapter (Zhang et al., ECCV 2022): `exp.log` of gaopengcuhk/Tip-Adapter at 30d2598, with the zero-shot CLIP
  and CLIP-Adapter numbers its authors report beside theirs; protocol from its `main.py` (e6bdba4).
- GDA (Wang et al., ICLR 2024, "A Hard-to-Beat Baseline for Training-free CLIP-Based Adaptation"): per-seed
  accuracies in `logs/fewshots.log` of mrflogs/ICLR24 (file at c83409b), rounded here to 0.01; the means in its
  `exp.log` (its Figure 1) agree within 0.01. Protocol from its `main_few_shots.py` and `datasets/`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

ELEVEN = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "flowers102", "food101", "fgvc_aircraft",
          "sun397", "dtd", "eurosat", "ucf101")  # the keys of configs/coop11.yaml
SHOTS = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class Protocol:
    """How a published number was obtained: what a reader must know before setting it beside a re-run one."""

    paper: str
    source: str  # where the numbers were read: repository@commit:path
    backbone: str  # CLIP visual encoder
    split: str
    seeds: str
    selection: str  # how hyper-parameters (and epochs) were chosen
    notes: str = ""


@dataclass(frozen=True)
class LiteratureRow:
    method: str
    dataset: str  # a key of ELEVEN
    shots: int | None  # K per class; None = zero-shot
    accuracy: float  # top-1 %, CoOp's test split; the mean over `per_seed` where there are several
    protocol: Protocol
    per_seed: tuple[float, ...] = ()


TIP_ADAPTER = Protocol(
    paper="Zhang et al., Tip-Adapter: Training-free Adaption of CLIP for Few-shot Classification, ECCV 2022",
    source="gaopengcuhk/Tip-Adapter@30d25981:exp.log",
    backbone="RN50 (OpenAI)", split="CoOp's split files (ImageNet: train / val as test)",
    seeds="one run, seed 1 (main.py)",
    selection="beta and alpha searched on the val split",
    notes="Tip-Adapter-F reports the best test accuracy over its training epochs (main.py keeps max(best test acc, "
          "final)): an epoch chosen on the test set")
TIP_ADAPTER_LOG_OTHERS = Protocol(
    paper=TIP_ADAPTER.paper, source=TIP_ADAPTER.source, backbone="RN50 (OpenAI)", split="CoOp's split files",
    seeds="not stated", selection="not stated",
    notes="reported by Tip-Adapter's authors beside their own rows; how they were run is not in the log")
GDA = Protocol(
    paper="Wang et al., A Hard-to-Beat Baseline for Training-free CLIP-Based Adaptation (GDA), ICLR 2024",
    source="mrflogs/ICLR24@c83409b5:logs/fewshots.log",
    backbone="RN50 (OpenAI)", split="CoOp's split files", seeds="1, 2, 3 (mean; per seed kept)",
    selection="alpha searched on CoOp's whole val split at every K (not min(K, 4) per class); ImageNet has none, "
              "and main_few_shots.py searches on its test features",
    notes="training-free; ImageNet's alpha is chosen on the test set")

# Tip-Adapter's exp.log: zero-shot CLIP, then {method: accuracies at 1, 2, 4, 8, 16 shots} (the log lists 16 first)
_TIP_LOG: dict[str, tuple[float, dict[str, tuple[float, ...]]]] = {
    "imagenet": (60.32, {"Tip-Adapter": (60.70, 60.96, 60.98, 61.45, 62.01),
                         "Tip-Adapter-F": (61.13, 61.69, 62.52, 64.00, 65.51),
                         "CLIP-Adapter": (61.20, 61.52, 61.84, 62.68, 63.59)}),
    "sun397": (58.52, {"Tip-Adapter": (61.30, 62.70, 64.15, 65.62, 66.85),
                       "Tip-Adapter-F": (62.50, 63.64, 66.21, 68.87, 71.47),
                       "CLIP-Adapter": (61.30, 63.29, 65.96, 67.50, 69.55)}),
    "oxford_pets": (85.83, {"Tip-Adapter": (86.10, 87.03, 86.45, 87.03, 88.14),
                            "Tip-Adapter-F": (87.00, 87.03, 87.54, 88.09, 89.70),
                            "CLIP-Adapter": (85.99, 86.73, 87.46, 87.65, 87.84)}),
    "eurosat": (37.52, {"Tip-Adapter": (54.38, 61.68, 65.32, 67.95, 70.54),
                        "Tip-Adapter-F": (59.53, 66.15, 74.12, 77.93, 84.54),
                        "CLIP-Adapter": (61.40, 63.90, 73.38, 77.93, 84.43)}),
    "caltech101": (85.92, {"Tip-Adapter": (87.18, 88.44, 89.39, 89.83, 90.18),
                           "Tip-Adapter-F": (89.33, 89.74, 90.56, 91.44, 92.86),
                           "CLIP-Adapter": (88.60, 89.37, 89.98, 91.40, 92.49)}),
    "dtd": (42.20, {"Tip-Adapter": (46.22, 49.47, 53.96, 58.63, 60.93),
                    "Tip-Adapter-F": (49.65, 53.72, 57.39, 62.71, 66.55),
                    "CLIP-Adapter": (45.80, 51.48, 56.86, 61.00, 65.96)}),
    "fgvc_aircraft": (17.10, {"Tip-Adapter": (19.05, 21.21, 22.41, 25.59, 29.76),
                              "Tip-Adapter-F": (20.22, 23.19, 25.80, 30.21, 35.55),
                              "CLIP-Adapter": (17.49, 20.10, 22.59, 26.25, 32.10)}),
    "food101": (77.32, {"Tip-Adapter": (77.42, 77.52, 77.54, 77.76, 77.83),
                        "Tip-Adapter-F": (77.51, 77.81, 78.24, 78.64, 79.43),
                        "CLIP-Adapter": (76.82, 77.22, 77.92, 78.04, 78.25)}),
    "flowers102": (66.02, {"Tip-Adapter": (73.12, 79.13, 83.80, 87.98, 89.89),
                           "Tip-Adapter-F": (79.98, 82.30, 88.83, 91.51, 94.80),
                           "CLIP-Adapter": (73.49, 81.61, 87.17, 91.72, 93.90)}),
    "ucf101": (61.35, {"Tip-Adapter": (62.60, 64.74, 66.46, 68.68, 70.58),
                       "Tip-Adapter-F": (64.87, 66.43, 70.55, 74.25, 78.03),
                       "CLIP-Adapter": (62.20, 67.12, 69.05, 73.30, 76.76)}),
    "stanford_cars": (55.74, {"Tip-Adapter": (57.54, 57.93, 61.45, 62.93, 66.77),
                              "Tip-Adapter-F": (58.86, 61.50, 64.57, 69.25, 75.74),
                              "CLIP-Adapter": (55.13, 58.74, 62.45, 67.89, 74.01)}),
}

# GDA's logs/fewshots.log: seeds 1, 2, 3, each at 1, 2, 4, 8, 16 shots
_GDA_LOG: dict[str, tuple[tuple[float, ...], ...]] = {
    "caltech101": ((87.51, 88.84, 90.43, 90.30, 92.45), (86.77, 89.13, 90.63, 91.97, 92.33),
                   (87.55, 87.91, 90.79, 91.76, 92.86)),
    "oxford_pets": ((84.98, 85.20, 87.33, 89.23, 88.47), (85.75, 87.11, 86.92, 88.99, 88.72),
                    (85.75, 87.76, 87.33, 89.13, 89.23)),
    "stanford_cars": ((56.49, 59.03, 63.41, 69.37, 75.51), (56.90, 59.48, 62.09, 69.18, 74.64),
                      (56.93, 59.40, 62.75, 68.24, 75.20)),
    "flowers102": ((68.41, 83.56, 89.57, 93.71, 95.25), (74.95, 82.50, 90.86, 93.71, 95.78),
                   (72.96, 82.66, 88.75, 92.29, 96.14)),
    "food101": ((77.39, 77.99, 77.97, 78.37, 78.92), (77.41, 77.79, 77.63, 78.49, 79.11),
                (77.47, 77.83, 77.89, 78.45, 79.13)),
    "fgvc_aircraft": ((17.13, 22.11, 28.26, 34.17, 40.89), (17.07, 21.99, 28.62, 34.17, 40.80),
                      (17.67, 23.25, 27.84, 33.87, 40.14)),
    "sun397": ((60.01, 63.85, 65.43, 68.57, 70.85), (59.89, 63.84, 65.08, 68.61, 70.67),
               (59.94, 63.23, 65.31, 68.55, 70.58)),
    "dtd": ((45.74, 50.18, 59.34, 64.24, 66.37), (47.52, 52.42, 56.74, 62.17, 66.73),
            (45.51, 51.18, 56.32, 61.88, 66.43)),
    "eurosat": ((61.04, 70.12, 75.91, 77.99, 86.01), (54.72, 72.54, 76.74, 83.54, 85.89),
                (59.16, 60.99, 73.53, 83.58, 86.47)),
    "ucf101": ((61.38, 67.20, 72.32, 74.78, 77.72), (64.00, 65.32, 70.29, 75.63, 76.76),
               (62.46, 66.32, 71.32, 76.82, 78.11)),
    "imagenet": ((60.71, 61.11, 61.74, 62.43, 63.84), (60.67, 61.43, 61.62, 62.51, 63.95),
                 (60.55, 61.15, 61.76, 62.44, 63.67)),
}


def literature_rows() -> list[LiteratureRow]:
    """Every published row, in a stable order (source, dataset, method, shots)."""
    rows: list[LiteratureRow] = []
    for ds, (zero_shot, methods) in _TIP_LOG.items():
        rows.append(LiteratureRow("zero_shot (CLIP)", ds, None, zero_shot, TIP_ADAPTER_LOG_OTHERS))
        for method, accs in methods.items():
            protocol = TIP_ADAPTER if method.startswith("Tip") else TIP_ADAPTER_LOG_OTHERS
            rows += [LiteratureRow(method, ds, k, acc, protocol) for k, acc in zip(SHOTS, accs, strict=True)]
    for ds, seeds in _GDA_LOG.items():
        for i, k in enumerate(SHOTS):
            per_seed = tuple(s[i] for s in seeds)
            rows.append(LiteratureRow("GDA", ds, k, round(statistics.fmean(per_seed), 2), GDA, per_seed))
    return rows


def rows_for(dataset: str, *, shots: int | None = None) -> list[LiteratureRow]:
    """The published rows of one of the eleven (at `shots` when given). Any other dataset, the demo's included, is
    a ValueError: a published number is never set beside a number of another dataset."""
    if dataset not in ELEVEN:
        raise ValueError(f"no published rows for {dataset!r}: literature rows exist for CoOp's eleven only "
                         f"({', '.join(ELEVEN)})")
    return [r for r in literature_rows() if r.dataset == dataset and (shots is None or r.shots == shots)]
