"""The BBj verbs the parser knows, and what each one accepts after its name.

Most verbs share one generic form: an optional channel list `(chan, NAME=value, ...)`, then a
comma-separated list of expressions and `NAME=value` options. Verbs with a grammar of their own
(IF, FOR, CLASS, ...) have a dedicated method in the parser; this table names it.

Keywords are not reserved in BBj: a verb name is a verb only at the start of a statement and
only when it is not followed by `=`, `.` or `[` (then it is a variable: `release! = ...`).
"""

from __future__ import annotations

# The record I/O verbs (PRINT, READ, READRECORD, ...): each takes a channel list and may use
# the null field `*`.
RECORD_IO_VERBS = frozenset(
    {
        "PRINT",
        "?",
        "WRITE",
        "READ",
        "INPUT",
        "INPUTE",
        "INPUTN",
        "EXTRACT",
        "FIND",
        "PRINTRECORD",
        "WRITERECORD",
        "READRECORD",
        "INPUTRECORD",
        "EXTRACTRECORD",
        "FINDRECORD",
    }
)

# Verbs that take an optional channel list `(chan{,NAME=value...})` before their items.
CHANNEL_VERBS = frozenset(
    RECORD_IO_VERBS
    | {
        "OPEN",
        "CLOSE",
        "LOCK",
        "UNLOCK",
        "REMOVE",
        "CHANOPT",
        "DUMP",
        "SETTRACE",
        "LCHECKIN",
        "RESCLOSE",
        "SQLOPEN",
        "SQLPREP",
        "SQLEXEC",
        "SQLSET",
        "SQLCLOSE",
        "SQLCOMMIT",
        "SQLROLLBACK",
        "SQLFETCH",
        "SELECT",
    }
)

# Verbs that may be followed by RECORD as a second word (READ RECORD(1)A$).
RECORD_VERBS = frozenset({"PRINT", "?", "WRITE", "READ", "INPUT", "EXTRACT", "FIND"})

# Verbs that never take anything after them.
BARE_VERBS = frozenset(
    {
        "BREAK",
        "CONTINUE",
        "BYE",
        "END",
        "STOP",
        "ESCAPE",
        "RETRY",
        "RESET",
        "DENUM",
        "ENDTRACE",
        "FLOATINGPOINT",
        "REPEAT",
        "WEND",
        "SWEND",
        "FI",
        "ENDIF",
        "CLASSEND",
        "METHODEND",
        "INTERFACEEND",
        "FNEND",
        "ELSE",
    }
)

# Verbs with the generic form (channel list and/or items and options).
GENERIC_VERBS = frozenset(
    CHANNEL_VERBS
    | {
        "ADDR",
        "BACKGROUND",
        "CALL",
        "CHDIR",
        "CLEARP",
        "CLIPCLEAR",
        "CLIPFROMFILE",
        "CLIPFROMSTR",
        "CLIPLOCK",
        "CLIPTOFILE",
        "CLIPUNLOCK",
        "DATA",
        "DELETE",
        "DIM",
        "DIRECT",
        "DREAD",
        "DROP",
        "ENTER",
        "ERASE",
        "EXECUTE",
        "EXIT",
        "FILE",
        "FILEOPT",
        "FNERR",
        "FULLTEXT",
        "INDEXED",
        "INITFILE",
        "IOLIST",
        "MKDIR",
        "MKEYED",
        "PRECISION",
        "PREFIX",
        "PROCESS_EVENTS",
        "REDIM",
        "RELEASE",
        "RESTORE",
        "RMDIR",
        "RUN",
        "SAVE",
        "SAVEP",
        "SERIAL",
        "SETDAY",
        "SETDRIVE",
        "SETOPTS",
        "SETTERM",
        "SETTIME",
        "SORT",
        "START",
        "STRING",
        "THROW",
        "UPDATELIC",
        "VKEYED",
        "WAIT",
        "XCALL",
        "XFILE",
        "XKEYED",
        "ENABLE",
        "DISABLE",
    }
)

# Verbs whose channel list or items may use the null field `*`.
IO_VERBS = frozenset(
    RECORD_IO_VERBS
    | {
        "ENTER",
        "DREAD",
        "IOLIST",
        "SQLEXEC",
        "SQLFETCH",
    }
)

# Verbs whose first item may be omitted (`DELETE ,label`, `PROCESS_EVENTS, TIM=1`).
LEADING_COMMA_VERBS = frozenset({"DELETE", "PROCESS_EVENTS"})

# Option names allowed per verb, where the language server or BASIS documentation pins them
# (`ERASE fileid{,MODE=string}{,TIM=int}{,ERR=lineref}`). Options must come last for these.
VERB_OPTIONS = {
    "ERASE": frozenset({"MODE", "TIM", "ERR"}),
    "INITFILE": frozenset({"MODE", "TIM", "ERR"}),
    "MKEYED": frozenset({"MODE", "ERR"}),
    "VKEYED": frozenset({"ERR"}),
    "XKEYED": frozenset({"ERR"}),
}

# Verbs whose items are key definitions such as [1:6] or [1:1:10]+[2:1:5].
KEYDEF_VERBS = frozenset({"MKEYED", "VKEYED", "XKEYED"})

# Options accepted in a channel list. Anything else is reported as a warning: BASIS adds
# options over the years, so an unknown name is suspicious, not certainly wrong.
CHANNEL_OPTIONS = frozenset(
    {
        "ERR",
        "END",
        "DOM",
        "KEY",
        "IND",
        "TIM",
        "SIZ",
        "ISZ",
        "KNUM",
        "DIR",
        "MODE",
        "BSZ",
        "LEN",
        "TBL",
        "IOL",
    }
)

# Every verb with a dedicated parse method: name -> method suffix (parser.stmt_<suffix>).
SPECIAL_VERBS = {
    "IF": "if",
    "ELSE": "else",
    "FI": "endif",
    "ENDIF": "endif",
    "THEN": "then_misplaced",
    "FOR": "for",
    "NEXT": "next",
    "WHILE": "while",
    "WEND": "wend",
    "REPEAT": "repeat",
    "UNTIL": "until",
    "SWITCH": "switch",
    "CASE": "case",
    "SWEND": "swend",
    "GOTO": "goto",
    "GOSUB": "goto",
    "ON": "on",
    "EXITTO": "goto",
    "SETERR": "seterr",
    "SETESC": "seterr",
    "RETURN": "return",
    "LET": "let",
    "DEF": "def",
    "FNEND": "fnend",
    "CLASS": "class",
    "INTERFACE": "class",
    "CLASSEND": "classend",
    "INTERFACEEND": "classend",
    "METHOD": "method",
    "METHODEND": "methodend",
    "METHODRET": "methodret",
    "FIELD": "field",
    "DECLARE": "declare",
    "USE": "use",
    "RENAME": "rename",
    "SELECT": "select",
    "TABLE": "table",
    "BEGIN": "begin",
    "CLEAR": "clear",
    "OPEN": "open",
    "CALLBACK": "paren_args",
    "REMOVE_CALLBACK": "paren_args",
}

# Label names the language server rejects (they read as verbs).
FORBIDDEN_LABELS = frozenset({"GOSUB", "BEGIN"})
