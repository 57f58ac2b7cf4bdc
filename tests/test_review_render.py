"""Model answers as HTML: escaped always, BBj highlighted, checker diagnostics on their lines."""

from __future__ import annotations

import re

from bbjtune.review.render import highlight_line, render_answer, split_answer


def _classes(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<span class="tok-(\w+)">(.*?)</span>', str(html))


def test_highlighter_marks_keywords_strings_numbers_comments():
    tokens = _classes(highlight_line('PRINT "a""b", x$, 12.5, .5, 1E3; rem done'))
    assert ("keyword", "PRINT") in tokens
    assert ("string", "&#34;a&#34;&#34;b&#34;") in tokens  # "" inside a string stays one string
    assert ("number", "12.5") in tokens and ("number", ".5") in tokens and ("number", "1E3") in tokens
    assert ("comment", "rem done") in tokens
    assert not any(text == "x$" for _, text in tokens)


def test_highlighter_knows_bbj_quirks():
    tokens = _classes(highlight_line("release$ = str$(n) + 'CS' + $0D0A$; remark = 1"))
    assert ("builtin", "str$") in tokens and ("mnemonic", "&#39;CS&#39;") in tokens
    assert ("string", "$0D0A$") in tokens
    assert not any(text in ("release$", "remark") for _, text in tokens)  # suffixed names, identifiers
    assert not any(kind == "comment" for kind, _ in tokens)
    assert _classes(highlight_line('PRINT "no end')) == [("keyword", "PRINT"), ("string", "&#34;no end")]
    assert _classes(highlight_line("eof:")) == [("label", "eof:")]
    assert _classes(highlight_line("x = a:b")) == []  # a colon inside a statement is no label
    assert ("builtin", "unt") in _classes(highlight_line("ch = unt"))


def test_everything_is_escaped():
    hostile = '<script>alert(1)</script> {{ 7*7 }} </textarea> "<img src=x onerror=alert(1)>" rem <b>'
    html = str(highlight_line(hostile))
    assert "<script" not in html and "<img" not in html and "<b>" not in html and "</textarea>" not in html
    assert "&lt;script&gt;" in html and "{{ " in html
    rendered = str(render_answer(hostile + "\n```bbj\n" + hostile + "\n```\n").html)
    assert "<script" not in rendered and "<img" not in rendered and "</textarea>" not in rendered


def test_answer_split_into_prose_and_code():
    segments = split_answer("Intro text\n```bbj\nPRINT 1\n```\nMore\n~~~python\nprint(1)\n~~~\n")
    assert [(s.kind, s.language) for s in segments] == [
        ("prose", ""),
        ("code", "bbj"),
        ("prose", ""),
        ("code", "python"),
    ]
    assert segments[1].text == "PRINT 1"
    unclosed = split_answer("Look:\n```\nPRINT 1\nPRINT 2")
    assert unclosed[-1].kind == "code" and unclosed[-1].text == "PRINT 1\nPRINT 2"


def test_unfenced_answer_uses_the_extracted_code():
    output = 'Here is the program:\nPRINT "hi"\nEND\nThat prints hi.'
    segments = split_answer(output, code='PRINT "hi"\nEND')
    assert [s.kind for s in segments] == ["prose", "code", "prose"]
    assert split_answer("Just an explanation, no code.", code="") == split_answer(
        "Just an explanation, no code."
    )


def test_diagnostics_are_shown_on_their_line():
    rendered = render_answer('```bbj\nx$ = "ok"\nPRINT "broken\nEND\n```')
    html = str(rendered.html)
    assert rendered.checked and rendered.errors >= 1
    lines = re.findall(r'<span class="code-line( has-\w+)?">', html)
    assert lines[0] == "" and lines[1] == " has-error" and lines[2] == ""
    assert re.search(r'class="diag diag-error">line 2, column \d+: error: unterminated string', html)
    # the diagnostic follows line 2 and comes before line 3
    assert html.index("diag-error") < html.index("END</span>")


def test_clean_code_non_bbj_blocks_and_empty_answers():
    clean = render_answer('```bbj\nPRINT "Hello"\nEND\n```')
    assert clean.checked and clean.errors == 0 and clean.warnings == 0 and "diag" not in str(clean.html)
    python = render_answer("```python\nprint('x' if a else \"y\")\n```")
    assert not python.checked and "tok-" not in str(python.html)
    empty = render_answer("   \n")
    assert not empty.checked and "no answer" in str(empty.html)
