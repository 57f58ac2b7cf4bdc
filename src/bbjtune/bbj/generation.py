"""Which BBj generation a question asks for, when it says so.

BBj code comes in two families that must not be mixed: objects (BBjAPI: `BBjAPI().openSysGui()`,
`addWindow`, callbacks; BBj GUI and DWC) and the older mnemonic style (a SYSGUI channel, `'WINDOW'`
mnemonics, READ RECORD event loops; Visual PRO/5 and character terminals). The tier 2 checks can
flag the wrong family (`quality.GENERATION_PATTERNS`) once the generation is known: evaluation cases
carry it, and a question put to the gateway often names it ("in Visual PRO/5", "a BBj GUI form",
"on a terminal screen").

`generation_asked` reads only such explicit words. A question that names both families (a
conversion, "no BBjAPI objects") or neither gives None, and then nothing is checked: a wrong guess
would send a right answer back. Measured (benchmarks/RESULTS.md): on the project's 131 training
examples it names 65 and none wrongly; on the 220 evaluation prompts, 72 and none wrongly.
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


def _any(patterns: tuple[str, ...], text: str) -> bool:
    return any(re.search(p, text) for p in patterns)


def generation_asked(text: str) -> str | None:
    """gui, dwc, vpro5 or character when the question names one family only; else None."""
    low = (text or "").lower()
    objects = _any(OBJECT, low) or _any(DWC, low)
    mnemonic, character = _any(MNEMONIC, low), _any(CHARACTER, low)
    if objects == (mnemonic or character):  # both families named, or neither
        return None
    if objects:
        return "dwc" if _any(DWC, low) else "gui"
    return "vpro5" if mnemonic else "character"
