"""Turn an LMM answer into a list of descriptions.

Handles numbered (`1.`, `1)`, `(1)`, `1:`, `**1.**`, `Description 1:`), bulleted (`-`, `*`, `•`) and
plain-line lists, a whole list on one line (`1. a 2. b 3. c`), items that wrap onto continuation lines, a
preamble ("Sure! Here are 10 descriptions:"), an epilogue after the list, more or fewer items than asked,
MiniGPT-4's `###` stop marker, and an answer cut off mid-item: when the backend says generation hit the
token limit and the last item has no closing punctuation, that item is dropped (a half sentence is
noise for the text encoder) and kept in `cut_off` so nothing is silently lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MARKER = (r"(?:\(?\d{1,3}[.):]\)?|\d{1,3}\s*-|[-*•‣◦+]"  # 1. 1) (1) 1: 1 -  and bullets
           r"|(?:description|caption)\s*#?\d{1,3}\s*[:.)-]|#{1,4}\s*\d{1,3}[.:)]?)")  # Description 1:  ### 1.
_ITEM = re.compile(rf"^\s*{_MARKER}\s+(.*\S)\s*$", re.IGNORECASE)
# A next number counts as a list marker only after the previous item's closing punctuation.
_INLINE_SPLIT = re.compile(r"(?<=[.!?;,])\s+(?=\(?\d{1,2}[.)]\s+\S)")
_PREAMBLE = re.compile(r"(here (are|is)|sure|certainly|of course|descriptions?\b.*:$|^okay)", re.IGNORECASE)
_MARKDOWN = re.compile(r"\*\*|__|`")
_TERMINAL = ('.', '!', '?', '"', "'", ')', '”', '’')


@dataclass(frozen=True)
class Parsed:
    descriptions: list[str]  # at most n, de-duplicated, in answer order
    n_found: int  # distinct items found before trimming to n (more than n = the LMM over-delivered)
    cut_off: str | None = None  # a last item dropped because generation stopped mid-item


def _clean(text: str) -> str:
    text = _MARKDOWN.sub("", text).strip().strip('"“”').strip()
    return re.sub(r"\s+", " ", text)


def _strip_stop_markers(raw: str) -> str:
    # MiniGPT-4's Vicuna template ends turns with "###"; a leaked role tag starts one.
    text = raw.replace("\r", "").split("###")[0]
    return re.sub(r"^\s*(assistant|gpt)\s*:\s*", "", text, flags=re.IGNORECASE)


def _split_inline_list(line: str) -> list[str]:
    """`1. a dog 2. a cat 3. grass` -> three lines, only when the line really counts 1, 2, ... ."""
    stripped = _MARKDOWN.sub("", line).strip()
    if not re.match(r"^\(?1[.)]\s", stripped) or not re.search(r"[.!?;,]\s+\(?2[.)]\s", stripped):
        return [line]
    return _INLINE_SPLIT.split(stripped)


def _list_items(lines: list[str]) -> list[str]:
    """Marker items with their continuation lines; text outside the list (preamble, epilogue) is dropped."""
    items: list[str] = []
    open_item = False  # a continuation line belongs to the previous item only until a blank line
    for line in lines:
        if not line.strip():
            open_item = False
            continue
        m = _ITEM.match(_MARKDOWN.sub("", line))
        if m:
            items.append(m.group(1))
            open_item = True
        elif open_item:
            items[-1] += " " + line.strip()
    return items


def parse_answer(raw: str, n: int, *, truncated: bool = False) -> Parsed:
    """Parse `raw` into at most `n` descriptions; `truncated` = generation hit the token limit."""
    lines = [part for ln in _strip_stop_markers(raw).split("\n") for part in _split_inline_list(ln)]
    items = _list_items(lines)
    if not items:
        # No list markers: one description per line, skipping a preamble line; else split sentences.
        body = [ln.strip() for ln in lines if ln.strip()]
        body = [ln for ln in body if not (_PREAMBLE.search(ln) and ln.rstrip().endswith(":"))]
        items = body if len(body) > 1 else re.split(r"(?<=[.!?])\s+", " ".join(body))
    cleaned = [t for t in (_clean(item) for item in items) if t]
    cut_off = None
    if truncated and cleaned and not cleaned[-1].endswith(_TERMINAL):
        cut_off = cleaned.pop()
    out: list[str] = []
    seen: set[str] = set()
    for text in cleaned:
        key = text.lower().rstrip(".")
        if key not in seen:
            seen.add(key)
            out.append(text)
    return Parsed(descriptions=out[:n], n_found=len(out), cut_off=cut_off)
