"""Which BBj generation a question asks for, when it says so.

BBj code comes in two families that must not be mixed: objects (BBjAPI: `BBjAPI().openSysGui()`,
`addWindow`, callbacks; BBj GUI and DWC) and the older mnemonic style (a SYSGUI channel, `'WINDOW'`
mnemonics, READ RECORD event loops; Visual PRO/5 and character terminals). The tier 2 checks can
flag the wrong family (`quality.GENERATION_PATTERNS`) once the generation is known: evaluation cases
carry it, and a question put to the gateway often names it ("in Visual PRO/5", "a BBj GUI form",
"on a terminal screen").

`generation_asked` reads only such explicit words. A word said in the negative ("no BBjAPI objects",
"without mnemonics", "instead of a SYSGUI channel") does not ask for its family. A question that
names both families (a conversion) or neither gives None, and then nothing is checked: a wrong
guess would send a right answer back. `generation_of_chat` asks the last question first and, when
it names no family at all, the chat's system prompt. Measured (benchmarks/RESULTS.md): on the
project's 131 training examples it names 66 and none wrongly; on the 220 evaluation prompts, 74
and none wrongly.
"""

from __future__ import annotations

import re

# words that name the object family (BBjAPI) and, within it, the web client
OBJECT = (
    r"\bbbjapi\b",
    r"\bbbj\s+gui\b",
    r"\bbbjsysgui\b",
    r"\bopensysgui\b",
    r"\baddwindow\b",
    r"\bbbj(?:top\w*)?window\b",
    r"\bbbj\s+window\b",
    r"\bobject[- ]oriented\s+gui\b",
    r"\bsetcallback\b",
)
DWC = (r"\bdwc\b", r"\bdynamic\s+web\s+client\b")
# words that name the mnemonic family: Visual PRO/5, and character terminals
MNEMONIC = (
    r"\bvisual\s*pro\s*/?\s*5\b",
    r"\bvpro5\b",
    r"\bpro/5\b",
    r"\bsysgui\s+channel\b",
    r"\bmnemonics?\b",
    r"'(?:window|button|edit)'",
)
CHARACTER = (
    r"\bcharacter[- ](?:ui|mode|based|terminal|screen|interface)\b",
    r"\bterminal\b",
    r"\btext[- ]mode\b",
    r"\bconsole\b",
)


# the family each generation belongs to: a check can only tell the families apart
FAMILY = {"gui": "objects", "dwc": "objects", "vpro5": "mnemonics", "character": "mnemonics"}


# "no BBjAPI objects", "without any mnemonics", "not a BBj GUI", "instead of the SYSGUI channel":
# up to two words (an article, an adjective) between the negation and the family's word
NEGATED = re.compile(r"\b(?:no|not|without|instead\s+of|rather\s+than|never)\s+(?:[\w/'-]+\s+){0,2}$")


def _any(patterns: tuple[str, ...], text: str) -> bool:
    """True when the text names one of the patterns in the affirmative."""
    return any(
        not NEGATED.search(text[max(m.start() - 40, 0) : m.start()])
        for p in patterns
        for m in re.finditer(p, text)
    )


def _read(text: str) -> tuple[set[str], str | None]:
    """(the families the text names, the generation when it names one family only)."""
    low = (text or "").lower()
    dwc = _any(DWC, low)
    objects, mnemonic = dwc or _any(OBJECT, low), _any(MNEMONIC, low)
    mnemonics = mnemonic or _any(CHARACTER, low)
    named = {f for f, said in (("objects", objects), ("mnemonics", mnemonics)) if said}
    if len(named) != 1:  # both families named, or neither
        return named, None
    if objects:
        return named, "dwc" if dwc else "gui"
    return named, "vpro5" if mnemonic else "character"


def generation_asked(text: str) -> str | None:
    """gui, dwc, vpro5 or character when the question names one family only; else None."""
    return _read(text)[1]


def _message_text(message: dict) -> str:
    """A message's text: a string, or the text parts of OpenAI's list of content parts."""
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(
            str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return str(content or "")


def generation_of_chat(messages: list[dict] | None) -> str | None:
    """The generation a chat asks for: its last question's; when that names no family at all, the
    system prompt's (a team's editor may say there which BBj it writes: "our programs are Visual
    PRO/5"). A system prompt that names every generation, as bbjtune's own does, gives None."""
    messages = [m for m in messages or [] if isinstance(m, dict)]
    question = next((_message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    named, generation = _read(question)
    if named:
        return generation
    return generation_asked(" ".join(_message_text(m) for m in messages if m.get("role") == "system"))
