"""The describer interface: images in, raw answers out (parsing is shared, see :mod:`.parse`).

The backends implement it, one module each, and are looked up by name in :mod:`.backends` (`scripted`,
`transformers`, `openai`, `minigpt4`, `file`); this module imports none of them. See docs/describe.md for each
backend's `options`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lmmreg.config import ConfigError, DescribeConfig
from lmmreg.errors import InputError


class BackendError(InputError):
    """The backend cannot work for any image (wrong address, model or key): the stage stops with one line."""


@dataclass(frozen=True)
class DescribeItem:
    image_id: str
    path: Path  # absolute path of the image file
    sha256: str
    attempt: int = 0  # > 0 when re-asking because too few descriptions came back (on_too_few: retry)


@dataclass
class Answer:
    raw: str
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    truncated: bool | None = None  # generation hit max_new_tokens (None = the backend cannot tell)
    extra: dict = field(default_factory=dict)


class Describer(Protocol):
    """A backend. `describe_batch` returns one :class:`Answer` per item, in order; a failure of one
    image is an Answer with `error` set, not an exception (exceptions abort the stage).

    A backend that answers out of order (a server at high concurrency) may also define
    `describe_iter(items)`, yielding `(item, answer)` as each completes, so every answer is stored the
    moment it arrives."""

    max_batch: int

    def describe_batch(self, items: list[DescribeItem]) -> list[Answer]: ...


def iter_answers(describer: Describer, items: Iterable[DescribeItem]) -> Iterator[tuple[DescribeItem, Answer]]:
    """(item, answer) pairs, as soon as the backend has them."""
    describe_iter = getattr(describer, "describe_iter", None)
    if describe_iter is not None:
        yield from describe_iter(items)
        return
    items = list(items)
    for i in range(0, len(items), describer.max_batch):
        batch = items[i:i + describer.max_batch]
        yield from zip(batch, describer.describe_batch(batch), strict=True)


def item_seed(seed: int, sha256: str, attempt: int = 0) -> int:
    """A per-image sampling seed: the same image gets the same seed whatever the order, batch or shard."""
    digest = hashlib.sha256(f"{seed}:{sha256}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def option(cfg: DescribeConfig, name: str, kind: type | tuple[type, ...], default: Any = ..., *,
           check=None, why: str = "") -> Any:
    """`describe.options.<name>`, type-checked; missing without a default is a ConfigError naming the key."""
    key = f"describe.options.{name}"
    if name not in cfg.options:
        if default is ...:
            raise ConfigError(f"{key}: required by describe.backend {cfg.backend!r}{' (' + why + ')' if why else ''}")
        return default
    value = cfg.options[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        else:
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{key}: expected {names}, got {type(value).__name__} {value!r}")
    if check is not None and not check(value):
        raise ConfigError(f"{key}: invalid value {value!r}{' (' + why + ')' if why else ''}")
    return value


def check_options(cfg: DescribeConfig, known: set[str]) -> None:
    """An unknown option is a typo until proven otherwise: fail naming it."""
    unknown = sorted(set(cfg.options) - known)
    if unknown:
        raise ConfigError(f"describe.options.{unknown[0]}: unknown for backend {cfg.backend!r} "
                          f"(known: {', '.join(sorted(known))})")
