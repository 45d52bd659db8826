"""`file` backend: import descriptions produced elsewhere (another machine, another tool, a hand-made set).

The file: `describe.import_file` (`.jsonl` or `.csv`; a DVC dependency of the describe stage, so editing it
re-runs the stage). Options: `key` (`id` = the manifest id, i.e. the image path relative to the dataset
root, the default; `path` = a path relative to the dataset root or absolute; `sha256` = the image's
content hash).

- JSONL: one object per image, `{"<key>": ..., "descriptions": ["...", ...]}` or
  `{"<key>": ..., "answer": "raw LMM text"}`.
- CSV: a `<key>` column and either an `answer` column (one row per image) or a `description` column
  (one row per description, rows of an image kept in file order).

An image missing from the file becomes an error record naming the file. The file's content is part of
the setting hash, so importing a corrected file replaces the old answers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

from lmmreg.config import ConfigError, DescribeConfig
from lmmreg.describe.base import Answer, DescribeItem, check_options, option
from lmmreg.errors import InputError
from lmmreg.preflight import MISSING, OK, Verdict

KEYS = ("id", "path", "sha256")


def _as_answer(descriptions: list[str]) -> str:
    # Stored as a numbered list so the shared parser (cleaning, de-duplication, n) treats every backend alike.
    return "\n".join(f"{i}. {' '.join(d.split())}" for i, d in enumerate(descriptions, start=1))


def load_imported(path: Path, key: str, normalize: Callable[[str], str] = str) -> dict[str, str]:
    """normalize(key value) -> raw answer text; ValueError naming file:line on a malformed or duplicated entry."""
    out: dict[str, str] = {}
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{where}: not JSON ({e})") from None
                if not isinstance(rec, dict) or key not in rec:
                    raise InputError(f"{where}: no {key!r} field (describe.options.key: {key})")
                if isinstance(rec.get("descriptions"), list) and all(isinstance(d, str) for d in rec["descriptions"]):
                    text = _as_answer(rec["descriptions"])
                elif isinstance(rec.get("answer"), str):
                    text = rec["answer"]
                else:
                    raise InputError(f"{where}: needs 'descriptions' (a list of strings) or 'answer' (a string)")
                k = normalize(str(rec[key]))
                if k in out:
                    raise InputError(f"{where}: {key} {rec[key]!r} appears twice")
                out[k] = text
        return out
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            text_col = "answer" if "answer" in cols else "description" if "description" in cols else None
            if key not in cols or text_col is None:
                raise InputError(f"{path}: needs columns {key!r} and 'answer' or 'description', has {cols}")
            grouped: dict[str, list[str]] = {}
            for lineno, row in enumerate(reader, start=2):
                k, text = normalize(row[key]), row[text_col]
                if text_col == "answer" and k in grouped:
                    raise InputError(f"{path}:{lineno}: {key} {k!r} appears twice")
                grouped.setdefault(k, []).append(text or "")
        if text_col == "answer":
            return {k: v[0] for k, v in grouped.items()}
        return {k: _as_answer([d for d in v if d.strip()]) for k, v in grouped.items()}
    raise ConfigError(f"describe.import_file: {path} must end in .jsonl or .csv")


class FileDescriber:
    needs_raw_root = True  # constructed with the dataset's raw folder (lmmreg.describe.backends)
    max_batch = 4096

    def __init__(self, cfg: DescribeConfig, *, raw_root: Path):
        if "path" in cfg.options:
            raise ConfigError("describe.options.path: the file to import is now describe.import_file (so that DVC "
                              "tracks it as a dependency of the describe stage)")
        check_options(cfg, {"key"})
        self.path = Path(cfg.import_file)
        if not self.path.is_file():
            raise ConfigError(f"describe.import_file: {self.path} not found")
        self.key = option(cfg, "key", str, "id", check=lambda v: v in KEYS, why=f"one of {', '.join(KEYS)}")
        self.root = Path(raw_root).resolve()
        # Paths compare resolved, whatever way the file spells them (relative to the dataset root or absolute).
        normalize = (lambda k: str((self.root / k).resolve())) if self.key == "path" else str
        self.answers = load_imported(self.path, self.key, normalize)
        if not self.answers:
            raise ConfigError(f"describe.import_file: {self.path} holds no descriptions (backend 'file' imports "
                              "your .jsonl or .csv: set describe.import_file to it)")

    def _lookup(self, item: DescribeItem) -> str | None:
        if self.key == "id":
            return self.answers.get(item.image_id)
        if self.key == "sha256":
            return self.answers.get(item.sha256)
        return self.answers.get(str(Path(item.path).resolve()))

    def describe_batch(self, items: list[DescribeItem]) -> list[Answer]:
        out = []
        for item in items:
            text = self._lookup(item)
            out.append(Answer(raw=text) if text is not None else
                       Answer(raw="", error=f"not in {self.path} (describe.options.key: {self.key})"))
        return out


def preflight(cfg: DescribeConfig, *, root: Path, sample_image: Callable[[], Path]) -> Verdict:
    """The file to import exists and is not empty (its content is checked when the stage reads it)."""
    path = Path(cfg.import_file)
    path = path if path.is_absolute() else root / path
    if not path.is_file() or path.stat().st_size == 0:
        return MISSING, f"{path}: not found or empty", "set describe.import_file to your descriptions (.jsonl/.csv)"
    return OK, f"{path} ({path.stat().st_size} bytes)", ""
