"""The describer backends by name: one module each, imported only when it is the configured one.

| name         | module                       | what it talks to                                  |
|--------------|------------------------------|---------------------------------------------------|
| scripted     | lmmreg.describe.scripted     | nothing: the demo's scenes (needs the raw folder) |
| openai       | lmmreg.describe.openai_chat  | any OpenAI-compatible chat-completions server     |
| transformers | lmmreg.describe.hf           | any Hugging Face image-text-to-text model         |
| minigpt4     | lmmreg.describe.minigpt4     | the paper's LMM through its own checkout          |
| file         | lmmreg.describe.imported     | descriptions produced elsewhere (the raw folder)  |

A backend module defines one class implementing :class:`lmmreg.describe.base.Describer`, constructed as
`cls(cfg)`, or `cls(cfg, raw_root=...)` where the class sets `needs_raw_root = True`. Adding a backend is adding
its module and its line below; `base` never imports a backend (no import circle).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from lmmreg.config import ConfigError, DescribeConfig
from lmmreg.describe.base import Describer

BACKENDS: dict[str, tuple[str, str]] = {  # name -> (module, class)
    "scripted": ("lmmreg.describe.scripted", "ScriptedDescriber"),
    "openai": ("lmmreg.describe.openai_chat", "OpenAIChatDescriber"),
    "transformers": ("lmmreg.describe.hf", "TransformersDescriber"),
    "minigpt4": ("lmmreg.describe.minigpt4", "MiniGPT4Describer"),
    "file": ("lmmreg.describe.imported", "FileDescriber"),
}


def build_describer(cfg: DescribeConfig, *, raw_root: Path) -> Describer:
    """Construct the configured backend (only its module is imported: transformers is heavy)."""
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"describe.backend: unknown backend {cfg.backend!r} (known: {', '.join(sorted(BACKENDS))})")
    module, name = BACKENDS[cfg.backend]
    cls = getattr(importlib.import_module(module), name)
    return cls(cfg, raw_root=raw_root) if getattr(cls, "needs_raw_root", False) else cls(cfg)
