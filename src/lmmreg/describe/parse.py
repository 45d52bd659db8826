"""Turn an LMM answer into a list of descriptions.

Handles numbered (`1.`, `1)`, `(1)`, `1:`), bulleted (`-`, `*`, `•`) and plain-line lists, a preamble
("Sure! Here are 10 descriptions:"), more or fewer items than asked and an answer cut off mid-item
(a last item with no closing punctuation while the answer hit the token limit is kept but flagged).
"""

from __future__ import annotations

import re

_ITEM = re.compile(r"^\s*(?:\(?\d{1,3}[.):]\)?|[-*•‣◦]|\d{1,3}\s*-)\s+(.*\S)\s*$")
_PREAMBLE = re.compile(r"(here (are|is)|sure|certainly|descriptions?\b.*:$|^okay)", re.IGNORECASE)
_MARKDOWN = re.compile(r"\*\*|__|`")


def _clean(text: str) -> str:
    text = _MARKDOWN.sub("", text).strip().strip('"').strip()
    return re.sub(r"\s+", " ", text)


def parse_descriptions(raw: str, n: int) -> list[str]:
    """Return at most `n` non-empty, de-duplicated descriptions found in `raw` (in order)."""
    lines = [ln for ln in raw.replace("\r", "").split("\n") if ln.strip()]
    items = [m.group(1) for ln in lines if (m := _ITEM.match(ln))]
    if not items:
        # No list markers: one description per line, skipping a preamble line; else split sentences.
        body = [ln for ln in lines if not (_PREAMBLE.search(ln) and ln.rstrip().endswith(":"))]
        items = body if len(body) > 1 else re.split(r"(?<=[.!?])\s+", " ".join(body))
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        text = _clean(item)
        key = text.lower().rstrip(".")
        if text and key not in seen:
            seen.add(key)
            out.append(text)
    return out[:n]
