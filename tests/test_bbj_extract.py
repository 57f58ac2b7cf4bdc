"""Extracting BBj code from model answers and markdown."""

from __future__ import annotations

from bbjtune.bbj import CodeBlock, check_source, extract_bbj, extract_code_blocks
from bbjtune.bbj.extract import looks_like_bbj

PROGRAM = (
    'sysgui! = BBjAPI().openSysGui("X0")\nwnd! = sysgui!.addWindow(10,10,200,100,"Hi")\nprocess_events\n'
)


def test_code_blocks_with_language_position_and_tilde_fences():
    text = "Intro\n```bbj\nprint 1\n```\ntext\n~~~\nx = 2\n~~~\n```python\nprint(3)\n```\n"
    assert extract_code_blocks(text) == [
        CodeBlock("print 1", "bbj", True, 3),
        CodeBlock("x = 2", None, True, 7),
        CodeBlock("print(3)", "python", True, 10),
    ]


def test_info_string_attributes_and_case_are_ignored():
    (block,) = extract_code_blocks('```BBj title="demo.bbj"\nprint 1\n```\n')
    assert block.language == "bbj"


def test_longer_fences_contain_shorter_ones():
    (block,) = extract_code_blocks("````markdown\n```bbj\nprint 1\n```\n````\n")
    assert block.code == "```bbj\nprint 1\n```"


def test_an_unclosed_fence_runs_to_the_end():
    (block,) = extract_code_blocks("Here:\n```bbj\nprint 1\nprint 2")
    assert block.code == "print 1\nprint 2" and block.fenced


def test_text_without_fences_is_one_unfenced_block():
    assert extract_code_blocks("\n\nprint 1\n\n") == [CodeBlock("print 1", None, False, 3)]
    assert extract_code_blocks("  \n") == []


def test_labelled_bbj_fences_win_and_are_joined():
    answer = f"Use this:\n```\nnot bbj at all, just words here\n```\n```bbj\n{PROGRAM}```\nand\n```bbx\nrelease\n```\n"
    assert extract_bbj(answer) == PROGRAM + "\nrelease\n"


def test_unlabelled_fences_are_used_when_they_look_like_bbj():
    assert extract_bbj(f"Here you go:\n```\n{PROGRAM}```\n") == PROGRAM
    assert extract_bbj(f"```basic\n{PROGRAM}```\n") == PROGRAM
    assert extract_bbj("```\nThe window opens when the program starts and closes at the end.\n```\n") == ""
    assert extract_bbj(f"```python\n{PROGRAM}```\n") == ""


def test_unfenced_answers_are_used_when_they_look_like_code():
    assert extract_bbj(PROGRAM) == PROGRAM
    prose = (
        "BBj is a business language.\nIt runs on the JVM and has a GUI API that many developers use daily."
    )
    assert extract_bbj(prose) == ""
    assert extract_bbj("") == ""


def test_sentences_around_an_unfenced_answer_are_dropped():
    answer = "Here is the code:\nfor i = 1 to 3\n  print i\nnext i\nIt prints the numbers one to three, each on a line."
    assert extract_bbj(answer) == "for i = 1 to 3\n  print i\nnext i\n"


def test_extracted_code_of_a_typical_answer_checks_clean():
    answer = (
        "Here is a class:\n\n```bbj\nclass public Greeter\n  method public void hello(BBjString name$)\n"
        '    print "Hello, ", name$\n  methodend\nclassend\n```\n\nCall it with `new Greeter().hello("x")`.\n'
    )
    code = extract_bbj(answer)
    assert code.startswith("class public Greeter") and code.endswith("classend\n")
    assert check_source(code) == []


def test_looks_like_bbj_counts_code_lines():
    assert looks_like_bbj("rem hi\nfor i = 1 to 3\n  print i\nnext i\n")
    assert not looks_like_bbj("This answer explains the idea in plain words without any code at all.\n")
