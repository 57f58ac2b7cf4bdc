"""Which BBj generation a question names (bbj/generation.py), and that it never names the wrong one
on the project's own labelled prompts (training examples and evaluation suites)."""

from __future__ import annotations

import glob
import json

import pytest
from conftest import REPO_ROOT

from bbjtune.bbj.generation import FAMILY, generation_asked, generation_of_chat


@pytest.mark.parametrize(
    "question, expected",
    [
        ("In Visual PRO/5, open a window with an OK button.", "vpro5"),
        ("Use the SYSGUI channel and 'WINDOW' mnemonics.", "vpro5"),
        ("On a BBj terminal screen, print a title on row 1.", "character"),
        ("In a BBj GUI form, validate the price field.", "gui"),
        ("Add a BBjAPI button with a callback.", "gui"),
        ("In DWC, give a button a hover style.", "dwc"),
        ("Sum the numbers 1 to 10 in BBj.", None),  # names neither
        ("Convert this Visual PRO/5 fragment to BBjAPI object calls.", None),  # names both
        # a word said in the negative does not ask for its family
        ("A Visual PRO/5 style program (no BBjAPI objects) with a window.", "vpro5"),
        ("Open a window without any mnemonics, in BBj GUI.", "gui"),
        ("Use BBjAPI objects instead of the SYSGUI channel.", "gui"),
        ("Not a BBj GUI program: print the totals on the terminal.", "character"),
        ("No BBjAPI, no mnemonics: just sum the numbers.", None),
    ],
)
def test_the_generation_a_question_names(question, expected):
    assert generation_asked(question) == expected


def _labelled(pattern: str, question) -> list[tuple[str, str]]:
    out = []
    for path in glob.glob(str(REPO_ROOT / pattern)):
        for line in open(path, encoding="utf-8"):
            row = json.loads(line)
            out.append((question(row), row["generation"]))
    return out


@pytest.mark.parametrize(
    "pattern, question, at_least",
    [
        (
            "examples/chatml/*.jsonl",
            lambda r: next(m["content"] for m in r["messages"] if m["role"] == "user"),
            60,
        ),
        ("evals/*.jsonl", lambda r: r["prompt"], 70),
    ],
)
def test_it_never_names_the_wrong_family_on_labelled_prompts(pattern, question, at_least):
    rows = _labelled(pattern, question)
    named = [(generation_asked(q), label) for q, label in rows if generation_asked(q)]
    wrong = [(g, label) for g, label in named if FAMILY[g] != FAMILY[label]]
    assert not wrong and len(named) >= at_least, (len(named), wrong[:3])


def test_a_chat_asks_its_question_first_then_its_system_prompt():
    from bbjtune.data.derive import default_system_prompt

    team = {"role": "system", "content": "Our programs are Visual PRO/5."}
    plain = {"role": "user", "content": "Open a window with an OK button."}
    assert generation_of_chat([team, plain]) == "vpro5"  # the question names none: the team's system prompt
    gui = {"role": "user", "content": "Open a BBj GUI window with an OK button."}
    assert generation_of_chat([team, gui]) == "gui"  # the question's own word wins
    both = {"role": "user", "content": "Convert this Visual PRO/5 window to BBjAPI objects."}
    assert generation_of_chat([team, both]) is None  # a conversion: nothing to hold it to
    parts = {"role": "user", "content": [{"type": "text", "text": "On a terminal screen, print a title."}]}
    assert generation_of_chat([parts]) == "character"
    # bbjtune's own system prompt names every generation: it says nothing about this chat
    assert generation_of_chat([{"role": "system", "content": default_system_prompt()}, plain]) is None
    assert generation_of_chat(None) is None
