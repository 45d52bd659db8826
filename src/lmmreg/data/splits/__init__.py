"""Split files and class tables shipped as package data, read with :func:`load_table`.

- `ucf101_split.json`: UCF-101 official split 1 as CoOp/LaBo use it, `{"train"|"val"|"test": [[path, label,
  class_name], ...]}`, paths relative to `UCF-101-midframes/`, labels in UCF `classInd.txt` order.
- `ucf101_classes.json`: the 101 class names in label order with (train+val, test) counts per class.
- `era_classes.json`: ERA's 25 class names in the paper's order and the folder-name aliases that map to them.
- `bar_classes.json`: BAR's 6 class names in the dataset's own order.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def load_table(name: str) -> Any:
    """Parse one JSON file shipped in this package (e.g. `"ucf101_split.json"`)."""
    return json.loads(resources.files(__name__).joinpath(name).read_text(encoding="utf-8"))
