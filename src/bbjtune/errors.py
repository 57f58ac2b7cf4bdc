"""The one error type bbjtune raises for problems a user can fix.

The CLI turns a `BbjtuneError` into one line on stderr (what went wrong, then what to do) and exit
code 2, never a traceback. Library code raises it for bad input; genuine bugs stay ordinary
exceptions so they keep their traceback.
"""

from __future__ import annotations


class BbjtuneError(Exception):
    """A problem with the user's input or environment, with a hint on how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message
