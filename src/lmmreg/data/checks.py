"""Checks `prepare` runs on every image before anything expensive: decodability, formats, leaks, classes.

Default policy (`prepare.on_bad_image: error`): collect *every* problem, then stop with one error that
lists them all. `skip` drops the bad files and records each with its reason in `prepare_report.json`.
Dataset-level problems (a class with no training images, a test class train lacks, a train/test
duplicate) are always errors, and counts that differ from the paper's are warnings.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from lmmreg.config import PrepareConfig
from lmmreg.data.images import BadImageError, is_supported, load_rgb
from lmmreg.data.layouts import RawItem
from lmmreg.data.manifest import Record, sha256_file

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """Problems found by `prepare`, all of them, one per line."""


def _inspect(root: Path, item: RawItem, max_pixels: int) -> tuple[RawItem, str | None, str, int, int]:
    path = root / item.path
    if not is_supported(path):
        return item, f"unsupported format {path.suffix!r}", "", 0, 0
    try:
        img = load_rgb(path, max_pixels=max_pixels)
    except BadImageError as e:
        return item, str(e).removeprefix(f"{path}: "), "", 0, 0
    return item, None, sha256_file(path), img.width, img.height


def check_items(items: list[RawItem], classes: list[str], *, root: Path, cfg: PrepareConfig,
                expected: dict[str, int], dataset: str, workers: int = 8) -> tuple[list[Record], dict]:
    root = Path(root)
    label = {c: i for i, c in enumerate(classes)}
    records: list[Record] = []
    bad: list[dict] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decoding releases the GIL
        results = pool.map(lambda it: _inspect(root, it, cfg.max_image_pixels), items)
        for item, problem, sha, w, h in tqdm(results, total=len(items), unit="img", desc=f"check {dataset}"):
            if problem is not None:
                bad.append({"path": item.path, "split": item.split, "reason": problem})
                continue
            if item.class_name not in label:
                bad.append({"path": item.path, "split": item.split, "reason": f"class {item.class_name!r} unknown"})
                continue
            records.append(Record(item.path, item.path, label[item.class_name], item.class_name, item.split,
                                  sha, w, h))
    if bad and cfg.on_bad_image == "error":
        lines = "\n".join(f"  {root / b['path']}: {b['reason']}" for b in bad)
        raise DatasetError(f"{dataset}: {len(bad)} unusable image(s) under {root} "
                           f"(set prepare.on_bad_image: skip to record and drop them):\n{lines}")
    for b in bad:
        log.warning("skipped %s: %s", root / b["path"], b["reason"])

    problems: list[str] = []
    by_sha: dict[str, set[str]] = defaultdict(set)
    paths_by_sha: dict[str, list[str]] = defaultdict(list)
    for r in records:
        by_sha[r.sha256].add(r.split)
        paths_by_sha[r.sha256].append(r.path)
    for sha, splits in by_sha.items():
        if len(splits) > 1:
            problems.append(f"byte-identical images in train and test: {', '.join(sorted(paths_by_sha[sha]))}")
    train_classes = Counter(r.class_name for r in records if r.split == "train")
    test_classes = Counter(r.class_name for r in records if r.split == "test")
    for c in classes:
        if train_classes[c] == 0:
            problems.append(f"class {c!r} has no training images")
    for c in sorted(set(test_classes) - set(train_classes)):
        problems.append(f"class {c!r} appears in test but not in train")
    if problems:
        raise DatasetError(f"{dataset} ({root}):\n" + "\n".join(f"  {p}" for p in problems))

    counts = {"train": sum(train_classes.values()), "test": sum(test_classes.values()), "classes": len(classes)}
    warnings = []
    for key, want in expected.items():
        got = counts.get(key)
        if got is not None and got != want:
            msg = f"{dataset}: {got} {key} vs {want} in the paper ({got - want:+d})"
            log.warning(msg)
            warnings.append(msg)
    report = {"dataset": dataset, "counts": counts, "per_class": {c: [train_classes[c], test_classes[c]]
              for c in classes}, "skipped": bad, "warnings": warnings}
    return records, report
