"""The answer parser on the shapes real LMM answers take."""

from __future__ import annotations

import pytest

from lmmreg.describe.parse import parse_answer


def test_numbered_list_with_preamble_and_epilogue():
    raw = ("Sure! Here are 10 semantic descriptions of the image:\n\n"
           "1. A man riding a bicycle.\n2) A red bicycle on a road.\n(3) Trees along the street.\n"
           "4: Sunny weather.\n\nThese descriptions capture the main elements of the scene.")
    p = parse_answer(raw, 10)
    assert p.descriptions == ["A man riding a bicycle.", "A red bicycle on a road.", "Trees along the street.",
                              "Sunny weather."]
    assert p.n_found == 4 and p.cut_off is None


def test_bullets_markdown_and_continuation_lines():
    raw = ("- **Outdoor scene**: a park\n  with tall trees.\n* A dog\n• A frisbee in the air.\n\n"
           "Note: colours may vary.")
    assert parse_answer(raw, 10).descriptions == ["Outdoor scene: a park with tall trees.", "A dog",
                                                  "A frisbee in the air."]


def test_more_items_than_asked_and_duplicates():
    raw = "\n".join(f"{i}. Item {i % 4}" for i in range(1, 13))
    p = parse_answer(raw, 3)
    assert p.descriptions == ["Item 1", "Item 2", "Item 3"]
    assert p.n_found == 4  # 12 items, 4 distinct


def test_inline_numbered_list_and_minigpt4_stop_marker():
    raw = "1. A beach. 2. Blue sea. 3. Palm trees.###Human: thanks"
    assert parse_answer(raw, 10).descriptions == ["A beach.", "Blue sea.", "Palm trees."]


def test_inline_split_needs_a_real_sequence():
    assert parse_answer("1. Version 2. of the app is open.", 10).descriptions == ["Version 2. of the app is open."]


def test_cut_off_last_item_dropped_only_when_truncated():
    raw = "1. A cat on a sofa.\n2. A lamp beside the\n"
    assert parse_answer(raw, 10, truncated=True) == parse_answer(raw, 10, truncated=True)
    p = parse_answer(raw, 10, truncated=True)
    assert p.descriptions == ["A cat on a sofa."] and p.cut_off == "A lamp beside the"
    assert parse_answer(raw, 10, truncated=False).descriptions == ["A cat on a sofa.", "A lamp beside the"]


def test_plain_lines_and_single_paragraph():
    assert parse_answer("Here are some:\nA red car\nA wet road", 5).descriptions == ["A red car", "A wet road"]
    assert parse_answer("A red car. It is raining! Is it night?", 5).descriptions == ["A red car.", "It is raining!",
                                                                                      "Is it night?"]


@pytest.mark.parametrize("raw", ["", "   \n\n", "###"])
def test_empty_answer_gives_nothing(raw):
    assert parse_answer(raw, 10).descriptions == []


def test_description_n_prefix():
    raw = "Description 1: A snowy mountain.\nDescription 2: A skier."
    assert parse_answer(raw, 10).descriptions == ["A snowy mountain.", "A skier."]
