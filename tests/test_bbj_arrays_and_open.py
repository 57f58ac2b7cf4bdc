"""Documented BBj forms the checker once rejected or let through: whole-array references `name[]`,
CLEAR with a variable list, and OPEN without a file id.

The valid forms are those of BASIS's documentation: the object-assignment page assigns a Java array
to a BBj array with `x![] = s!.split(",")`; PRINT, STR(), DREAD, CLEAR and VECTOR() take a whole
array as `name[]`; CLEAR takes an optional variable list. OPEN's syntax is
`OPEN (fileno{,MODE=string}{,TIM=int}{,ERR=lineref})fileid`: the file id is not optional.
"""

from __future__ import annotations

import pytest

from bbjtune.bbj import check_source


def errors(text: str) -> list:
    return [d for d in check_source(text + "\noops:\n") if d.severity == "error"]


WHOLE_ARRAY = [
    'x![] = s!.split(",")',
    "print a[]",
    "print (1)a$[], n[]",
    "x$ = str(a$[])",
    "dread x![]",
    "clear x![]",
    "v! = vector(names$[])",
    "a![] = b![]",
    "#items![] = list!.toArray()",
]
CLEAR_FORMS = ["clear", "clear x!", "clear x!, a$[], n", "clear except a, b$[all]", "clear except x![]"]


@pytest.mark.parametrize("statement", WHOLE_ARRAY + CLEAR_FORMS)
def test_documented_whole_array_and_clear_forms_are_accepted(statement):
    assert errors(statement) == []


@pytest.mark.parametrize(
    "statement,code",
    [
        ("x = a[](1)", "syntax-error"),  # nothing may follow the empty brackets
        ("x = a[].size()", "syntax-error"),
        ("x = (a)[]", "unbalanced-paren"),  # only a name can be a whole array
        ("x = []", "syntax-error"),
        ("clear 5", "malformed-except"),  # CLEAR's list holds variables only
        ('clear x!, "a"', "malformed-except"),
    ],
)
def test_misused_empty_brackets_and_clear_lists_are_errors(statement, code):
    found = errors(statement)
    assert [d.code for d in found] == [code], found


@pytest.mark.parametrize(
    "statement", ["open (1)", "open (1,err=oops)", 'open (ch,mode="O_READ")', 'open "file.txt"', "open"]
)
def test_open_without_a_channel_or_file_id_is_an_error(statement):
    (d,) = errors(statement)
    assert d.code == "malformed-open"
    assert "OPEN (chan)" in d.message


@pytest.mark.parametrize(
    "statement",
    ['open (1)"file.txt"', "open (ch,err=oops)file$", 'open(1)"states.dat"', 'OPEN (unt)"path/"+"x.png"'],
)
def test_open_with_a_file_id_is_accepted(statement):
    assert errors(statement) == []
