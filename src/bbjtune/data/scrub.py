"""Remove secrets and personal data from training text before a model can memorise them.

Real BBj code carries connection strings with passwords, API keys, e-mail addresses and the IP
addresses of company servers. Each is replaced by a placeholder that keeps the code readable and
valid (a string stays a string):

| kind        | found as                                                         | becomes            |
|-------------|------------------------------------------------------------------|--------------------|
| password    | `user:pw@host` in URLs; `password=…`/`pwd=…` inside a string;    | `<password>`       |
|             | `password$ = "…"` assignments                                    |                    |
| api_key     | well-known key formats (AWS, GitHub, OpenAI, Slack, Google),     | `<api-key>`        |
|             | `api_key/token/secret … = "…"`, `Bearer …`, PEM private keys     |                    |
| email       | any address outside the reserved example domains                 | `user@example.com` |
| ip          | IPv4 addresses except loopback, 0.0.0.0 and the documentation    | `192.0.2.10`       |
|             | ranges                                                           |                    |

Only counts are reported, never the values found.
"""

from __future__ import annotations

import re
from collections import Counter

PASSWORD = "<password>"
API_KEY = "<api-key>"
EMAIL = "user@example.com"
IP = "192.0.2.10"
KINDS = ("password", "api_key", "email", "ip")

_SECRET_NAME = r"(?:password|passwd|pwd|pass)"
_KEY_NAME = (
    r"(?:api[_-]?key|apikey|api[_-]?token|access[_-]?token|auth[_-]?token|secret[_-]?key|"
    r"client[_-]?secret|access[_-]?key|secret|token)"
)

_URL_CREDENTIALS = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@\"'<>]+):([^\s@\"'/<>]+)@")
_STRING_LITERAL = re.compile(r'"[^"\n]*"')
_KV_IN_STRING = re.compile(rf"(?i)(\b(?:{_SECRET_NAME}|{_KEY_NAME})\s*[:=]\s*)([^;&\"'\s,)]+)")
# The variable name is matched from the secret word on (`dbPassword$` matches at `Password$`): a
# leading `\w*` would make the regex engine retry every word of the text.
_ASSIGNED_SECRET = re.compile(r'(?i)((?:(?:password|passwd|pwd)\w*|\bpass)[$!]?\s*=\s*)"([^"\n]+)"')
_ASSIGNED_KEY = re.compile(rf'(?i)({_KEY_NAME}\w*[$!]?\s*[=:]\s*)"([A-Za-z0-9_+/=.:-]{{8,}})"')
_BEARER = re.compile(r"(?i)(\bBearer\s+)([A-Za-z0-9._~+/-]{12,}=*)")
_KNOWN_KEYS = re.compile(
    r"\b(?:AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_-]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35})\b"
)
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b")
_SAFE_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
_IPV4 = re.compile(r"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SAFE_IP_PREFIXES = ("127.", "0.", "255.255.255.255", "192.0.2.", "198.51.100.", "203.0.113.")
_PLACEHOLDERS = (PASSWORD, API_KEY)
_NAME_HINT = re.compile(r"pass|pwd|key|token|secret")
_KEY_PREFIXES = ("AKIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "sk-", "xox", "AIza")


def scrub_text(text: str) -> tuple[str, Counter]:
    """The text with secrets and personal data replaced, and how many of each kind were replaced."""
    counts: Counter = Counter()

    def sub(pattern: re.Pattern, kind: str, replace, s: str) -> str:
        def one(m: re.Match) -> str:
            new = replace(m)
            if new != m.group(0):
                counts[kind] += 1
            return new

        return pattern.sub(one, s)

    keep_placeholder = lambda m, value: m.group(0) if m.group(2) in _PLACEHOLDERS else m.group(1) + value  # noqa: E731
    lower = text.lower()
    # each pattern runs only when a cheap substring test says it can match (most text has no secrets)
    if "-----begin" in lower:
        text = sub(_PRIVATE_KEY, "api_key", lambda m: API_KEY, text)
    if "://" in text:
        text = sub(_URL_CREDENTIALS, "password", lambda m: keep_placeholder(m, ":" + PASSWORD + "@"), text)
    if _NAME_HINT.search(lower):
        text = _STRING_LITERAL.sub(
            lambda lit: (
                sub(_KV_IN_STRING, "password", _kv_value, lit.group(0))
                if _NAME_HINT.search(lit.group(0).lower())
                else lit.group(0)
            ),
            text,
        )
        text = sub(_ASSIGNED_SECRET, "password", lambda m: keep_placeholder(m, f'"{PASSWORD}"'), text)
        text = sub(
            _ASSIGNED_KEY,
            "api_key",
            lambda m: keep_placeholder(m, f'"{API_KEY}"') if _looks_like_key(m.group(2)) else m.group(0),
            text,
        )
    if "bearer" in lower:
        text = sub(_BEARER, "api_key", lambda m: m.group(1) + API_KEY, text)
    if any(prefix in text for prefix in _KEY_PREFIXES):
        text = sub(_KNOWN_KEYS, "api_key", lambda m: API_KEY, text)
    if "@" in text:
        text = sub(
            _EMAIL,
            "email",
            lambda m: m.group(0) if m.group(1).lower() in _SAFE_EMAIL_DOMAINS else EMAIL,
            text,
        )
    if "." in text:
        text = sub(_IPV4, "ip", _ip_replacement, text)
    return text, counts


def _kv_value(m: re.Match) -> str:
    value = m.group(2)
    if value in _PLACEHOLDERS or value.startswith("<"):
        return m.group(0)
    is_password = re.match(rf"(?i)\s*{_SECRET_NAME}\b", m.group(1)) is not None
    if not is_password and not _looks_like_key(value):  # `token=1` in a string is an option
        return m.group(0)
    return m.group(1) + (PASSWORD if is_password else API_KEY)


def _looks_like_key(value: str) -> bool:
    """Keys are long and mix letters with digits; words and options are not keys."""
    return len(value) >= 8 and any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _ip_replacement(m: re.Match) -> str:
    address = m.group(0)
    if any(int(part) > 255 for part in m.groups()) or address.startswith(_SAFE_IP_PREFIXES):
        return address
    return IP
