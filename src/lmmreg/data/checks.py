"""Checks `prepare` runs before anything expensive: the file list, then every image decoded; and doctor's, which
lists each dataset's raw files without reading them (`check_datasets`).

Default policy (`prepare.on_bad_image: error`): collect *every* problem, then stop with one error that
lists them all. `skip` drops the bad files and records each with its reason in `prepare_report.json`.
Dataset-level problems (a class with no training images, a test class train lacks, a train/test
duplicate) are always errors, and counts that differ from the paper's are warnings. A split fixed by a published
file (CoOp's) is the benchmark's own: its cross-split duplicates are recorded and warned about, not refused.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lmmreg.config import Params, PrepareConfig
from lmmreg.data.images import BadImageError, is_supported, load_rgb
from lmmreg.data.layouts import Layout, RawItem, list_layout
from lmmreg.data.manifest import SPLITS, Record, sha256_file
from lmmreg.data.sources import placement_help
from lmmreg.errors import InputError
from lmmreg.preflight import MISSING, OK, WARN, Check
from lmmreg.progress import progress

log = logging.getLogger(__name__)


class DatasetError(InputError):
    """Problems found by `prepare`, all of them, one per line."""


def _class_problems(items: list[RawItem] | list[Record], classes: list[str]) -> list[str]:
    train = Counter(it.class_name for it in items if it.split == "train")
    test = Counter(it.class_name for it in items if it.split == "test")
    problems = [f"class {c!r} has no training images" for c in classes if train[c] == 0]
    problems += [f"class {c!r} appears in test but not in train" for c in sorted(set(test) - set(train))]
    return problems


def check_layout(layout: Layout, *, dataset: str, root: str | Path) -> None:
    """Checks on the file list alone, run before any file is read: it must fit its own class list."""
    problems: list[str] = []
    if not layout.items:
        problems.append("no files found")
    if len(set(layout.classes)) != len(layout.classes):
        dup = sorted(c for c, k in Counter(layout.classes).items() if k > 1)
        problems.append(f"class list repeats {dup}")
    unknown = Counter(it.class_name for it in layout.items if it.class_name not in set(layout.classes))
    problems += [f"class {c!r} ({k} files) is not in the class list" for c, k in sorted(unknown.items())]
    ids = Counter(it.id for it in layout.items)
    problems += [f"{c!r} listed {k} times" for c, k in sorted(ids.items()) if k > 1][:20]
    problems += _class_problems(layout.items, layout.classes)
    if problems:
        raise DatasetError(f"{dataset} ({root}):\n" + "\n".join(f"  {p}" for p in problems))


def _inspect(root: Path, item: RawItem, max_pixels: int) -> tuple[RawItem, str | None, str, int, int]:
    path = root / item.path
    if not is_supported(path):
        return item, f"unsupported format {path.suffix or '(no extension)'!r}", "", 0, 0
    try:
        img = load_rgb(path, max_pixels=max_pixels)
    except BadImageError as e:
        return item, str(e).removeprefix(f"{path}: "), "", 0, 0
    return item, None, sha256_file(path), img.width, img.height


def check_items(items: list[RawItem], classes: list[str], *, root: Path, cfg: PrepareConfig,
                expected: dict[str, int], dataset: str, bad: list[dict] | None = None,
                workers: int = 8, fixed_split: bool = False) -> tuple[list[Record], dict]:
    """Decode every image under `root`; returns the manifest records and the report for `prepare_report.json`.

    `bad` carries problems found earlier (e.g. videos that would not decode), as dicts with `path` (as shown to
    the user), `id`, `split` and `reason`; they are reported and handled with the images' own. `fixed_split`: the
    split is a published one (CoOp's files), so byte-identical images across its splits are warnings (listed under
    `duplicates`), not errors.
    """
    root = Path(root)
    label = {c: i for i, c in enumerate(classes)}
    records: list[Record] = []
    bad = list(bad or [])
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decoding releases the GIL
        results = pool.map(lambda it: _inspect(root, it, cfg.max_image_pixels), items)
        for item, problem, sha, w, h in progress(results, total=len(items), unit="img", desc=f"check {dataset}"):
            if problem is None and item.class_name not in label:
                problem = f"class {item.class_name!r} unknown"
            if problem is not None:
                bad.append({"path": str(root / item.path), "id": item.id, "split": item.split, "reason": problem})
                continue
            records.append(Record(item.id, item.path, label[item.class_name], item.class_name, item.split,
                                  sha, w, h))
    if bad and cfg.on_bad_image == "error":
        lines = "\n".join(f"  {b['path']}: {b['reason']}" for b in bad)
        raise DatasetError(f"{dataset}: {len(bad)} unusable file(s) "
                           f"(set prepare.on_bad_image: skip to record and drop them):\n{lines}")
    for b in bad:
        log.warning("skipped %s: %s", b["path"], b["reason"])

    problems: list[str] = []
    splits_by_sha: dict[str, set[str]] = defaultdict(set)
    paths_by_sha: dict[str, list[str]] = defaultdict(list)
    for r in records:
        splits_by_sha[r.sha256].add(r.split)
        paths_by_sha[r.sha256].append(str(root / r.path))
    duplicates = []
    for sha, splits in splits_by_sha.items():
        if len(splits) > 1:
            where = " and ".join(s for s in SPLITS if s in splits)
            duplicates.append(f"byte-identical images in {where}: {', '.join(sorted(paths_by_sha[sha]))}")
    if fixed_split:
        for d in duplicates:
            log.warning("%s: %s (kept: the published split has them)", dataset, d)
    else:
        problems += duplicates
    problems += [p + (" (after skipping unusable files)" if bad else "") for p in _class_problems(records, classes)]
    if problems:
        raise DatasetError(f"{dataset} ({root}):\n" + "\n".join(f"  {p}" for p in problems))

    train_classes = Counter(r.class_name for r in records if r.split == "train")
    test_classes = Counter(r.class_name for r in records if r.split == "test")
    counts = {"train": sum(train_classes.values()), "test": sum(test_classes.values()), "classes": len(classes)}
    if "val" in expected or any(it.split == "val" for it in items):
        counts["val"] = sum(r.split == "val" for r in records)
    warnings = []
    for key, want in expected.items():
        got = counts.get(key)
        if got is None:
            raise DatasetError(f"sources.{dataset}.expected.{key}: unknown count (known: {sorted(counts)})")
        if got != want:
            pct = f", {100 * (got - want) / want:+.1f}%" if want else ""
            msg = f"{dataset}: {got} {key} vs {want} in the paper ({got - want:+d}{pct})"
            log.warning(msg)
            warnings.append(msg)
    report = {"dataset": dataset, "counts": counts, "per_class": {c: [train_classes[c], test_classes[c]]
              for c in classes}, "skipped": bad, "warnings": warnings}
    if fixed_split and duplicates:
        report["duplicates"] = duplicates
    return records, report


def check_datasets(params: Params, root: Path) -> list[Check]:
    """Doctor's check of each listed dataset under `root`/data/raw: the layout lists its files, every listed file
    exists, counts vs `expected` (found counts are the Check's data, for the disk estimate)."""
    out = []
    for ds in params.datasets:
        src = params.source(ds)
        raw = root / "data" / "raw" / ds
        name = f"dataset {ds}"
        help_text = placement_help(ds, src.layout, Path("data/raw") / ds)
        if src.layout == "demo":
            out.append(Check(name, OK, "generated by the make_demo stage", ""))
            continue
        try:
            layout = list_layout(src.layout, raw, src.options)
            check_layout(layout, dataset=ds, root=raw)
        except (FileNotFoundError, DatasetError, ValueError) as e:
            out.append(Check(name, MISSING, f"layout {src.layout}: {str(e).splitlines()[0]}", help_text))
            continue
        absent = [it.path for it in layout.items if not (raw / it.path).is_file()]
        splits = Counter(it.split for it in layout.items)
        got = {"train": splits["train"], "test": splits["test"], "classes": len(layout.classes)}
        summary = f"layout {src.layout}: {got['train']} train / {got['test']} test, {got['classes']} classes"
        found = {"dataset": ds, "counts": got}
        if absent:
            out.append(Check(name, MISSING, f"{summary}; {len(absent)} listed file(s) absent, e.g. {absent[0]}",
                             help_text, **found))
            continue
        off = [f"{k} {got[k]} vs {v}" for k, v in src.expected.items() if k in got and got[k] != v]
        if off:
            out.append(Check(name, WARN, f"{summary}; differs from the paper: {', '.join(off)}",
                             "fine for your own subset; for the paper's numbers: " + help_text, **found))
        else:
            out.append(Check(name, OK, summary + (" (as in the paper)" if src.expected else ""), **found))
    return out
