"""The describer backends by name: one module each, imported only when it is the configured one.

| name         | module                       | what it talks to                                  |
|--------------|------------------------------|---------------------------------------------------|
| scripted     | lmmreg.describe.scripted     | nothing: the demo's scenes (needs the raw folder) |
| openai       | lmmreg.describe.openai_chat  | any OpenAI-compatible chat-completions server     |
| transformers | lmmreg.describe.hf           | any Hugging Face image-text-to-text model         |
| minigpt4     | lmmreg.describe.minigpt4     | the paper's LMM through its own checkout          |
| file         | lmmreg.describe.imported     | descriptions produced elsewhere (the raw folder)  |

A backend module defines one class implementing :class:`lmmreg.describe.base.Describer`, constructed as
`cls(cfg)`, or `cls(cfg, raw_root=...)` where the class sets `needs_raw_root = True`. A module may also define
`preflight(cfg, *, root, sample_image) -> (status, detail, fix)`: whether the backend can run here (a server that
answers, a model in the cache, a checkout, a file), which `python -m lmmreg doctor` reports; a backend without one
needs nothing. Adding a backend is adding its module and its line below; `base` never imports a backend (no import
circle).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from lmmreg.config import ConfigError, DescribeConfig
from lmmreg.describe.base import Describer
from lmmreg.preflight import Verdict

BACKENDS: dict[str, tuple[str, str]] = {  # name -> (module, class)
    "scripted": ("lmmreg.describe.scripted", "ScriptedDescriber"),
    "openai": ("lmmreg.describe.openai_chat", "OpenAIChatDescriber"),
    "transformers": ("lmmreg.describe.hf", "TransformersDescriber"),
    "minigpt4": ("lmmreg.describe.minigpt4", "MiniGPT4Describer"),
    "file": ("lmmreg.describe.imported", "FileDescriber"),
}


def _backend(cfg: DescribeConfig) -> tuple[ModuleType, str]:
    """The configured backend's module (imported only now: transformers is heavy) and its class name."""
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"describe.backend: unknown backend {cfg.backend!r} (known: {', '.join(sorted(BACKENDS))})")
    module, name = BACKENDS[cfg.backend]
    return importlib.import_module(module), name


def build_describer(cfg: DescribeConfig, *, raw_root: Path) -> Describer:
    """Construct the configured backend."""
    module, name = _backend(cfg)
    cls = getattr(module, name)
    return cls(cfg, raw_root=raw_root) if getattr(cls, "needs_raw_root", False) else cls(cfg)


def preflight(cfg: DescribeConfig, *, root: Path, sample_image: Callable[[], Path]) -> Verdict | None:
    """The configured backend's own check that it can run here (its module's `preflight`); None if it needs nothing.

    `root` is the project root (relative paths in `cfg` are under it); `sample_image()` gives one real image to send,
    for a backend whose check is a real request."""
    module, _ = _backend(cfg)
    check = getattr(module, "preflight", None)
    return None if check is None else check(cfg, root=root, sample_image=sample_image)
