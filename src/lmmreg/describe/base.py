"""The describer interface: images in, raw answers out (parsing is shared, see :mod:`.parse`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lmmreg.config import DescribeConfig, stable_hash

# Option keys that never enter a hash, a log line or MLflow (they hold secrets or machine-local paths).
UNHASHED_OPTIONS = {"api_key_env", "concurrency", "timeout_s", "max_retries", "batch_size", "device"}


@dataclass(frozen=True)
class DescribeItem:
    image_id: str
    path: Path  # absolute path of the image file
    sha256: str


@dataclass
class Answer:
    raw: str
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    extra: dict = field(default_factory=dict)


class Describer(Protocol):
    """A backend. `describe_batch` returns one :class:`Answer` per item, in order; a failure of one
    image is an Answer with `error` set, not an exception (exceptions abort the stage)."""

    max_batch: int

    def describe_batch(self, items: list[DescribeItem]) -> list[Answer]: ...


def setting_hash(cfg: DescribeConfig) -> str:
    """Identifies one describe setting (backend, model, prompt, generation settings): the store key."""
    options = {k: v for k, v in cfg.options.items() if k not in UNHASHED_OPTIONS}
    return stable_hash({
        "backend": cfg.backend, "model": cfg.model, "prompt": cfg.prompt, "n": cfg.n_descriptions,
        "temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens,
        "repetition_penalty": cfg.repetition_penalty, "seed": cfg.seed, "options": options,
    })


def build_describer(cfg: DescribeConfig, *, raw_root: Path) -> Describer:
    """Construct the configured backend (imports stay lazy: transformers is heavy)."""
    if cfg.backend == "scripted":
        from lmmreg.describe.scripted import ScriptedDescriber

        return ScriptedDescriber(cfg, raw_root=raw_root)
    raise NotImplementedError(f"describe.backend: {cfg.backend!r} is not available in this build")
