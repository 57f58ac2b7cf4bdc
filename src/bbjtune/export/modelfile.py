"""The Ollama Modelfile: the GGUF, an explicit ChatML TEMPLATE, stop tokens, context, system prompt.

A fine-tuned model that "never stops" or "babbles" in Ollama almost always has a TEMPLATE that does
not match its training format, or no stop tokens. The Modelfile written here spells out the Qwen2.5
ChatML format the model was trained on (system, user and assistant turns, the default Qwen system
turn when there is none, and the fill-in-the-middle form editors use for code completion), stops
on `<|im_end|>` and `<|endoftext|>`, and carries the training data's system prompt. Before it is
written, its TEMPLATE is rendered for sample conversations (gotemplate.py, Ollama's semantics) and
compared with the ChatML text of `render_chatml`; a difference is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.artifacts import atomic_write_text
from bbjtune.errors import BbjtuneError
from bbjtune.export.gotemplate import render_go_template
from bbjtune.models.chat_template import ENDOFTEXT, IM_END, QWEN_DEFAULT_SYSTEM, render_chatml
from bbjtune.models.fim import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, fim_prompt

STOP_TOKENS = (IM_END, ENDOFTEXT)

# Ollama fills .System (all system messages, or the Modelfile's SYSTEM), .Messages, and for
# completion requests with a suffix .Prompt/.Suffix. A trailing assistant message is left open, so
# the model continues it (Ollama's convention for prefilled answers).
CHATML_GO_TEMPLATE = (
    "{{- if .Suffix }}" + FIM_PREFIX + "{{ .Prompt }}" + FIM_SUFFIX + "{{ .Suffix }}" + FIM_MIDDLE + "\n"
    "{{- else }}<|im_start|>system\n"
    "{{ if .System }}{{ .System }}{{ else }}" + QWEN_DEFAULT_SYSTEM + "{{ end }}<|im_end|>\n"
    "{{ range $i, $m := .Messages }}\n"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
    '{{- if eq $m.Role "user" }}<|im_start|>user\n'
    "{{ $m.Content }}<|im_end|>\n"
    '{{ else if eq $m.Role "assistant" }}<|im_start|>assistant\n'
    "{{ $m.Content }}{{ if not $last }}<|im_end|>\n"
    "{{ end }}\n"
    "{{- end }}\n"
    '{{- if and $last (ne $m.Role "assistant") }}<|im_start|>assistant\n'
    "{{ end }}\n"
    "{{- end }}\n"
    "{{- end }}"
)


def ollama_values(messages: list[dict[str, str]], default_system: str | None) -> dict[str, Any]:
    """The data Ollama gives the TEMPLATE for a chat request (its `collate` step, for this template's needs)."""
    systems = [m["content"] for m in messages if m["role"] == "system"]
    if not systems and default_system:
        systems = [default_system]
    turns = [{"Role": m["role"], "Content": m["content"]} for m in messages if m["role"] != "system"]
    return {"System": "\n\n".join(systems), "Messages": turns, "Prompt": "", "Suffix": "", "Response": ""}


def expected_chatml(messages: list[dict[str, str]], default_system: str | None) -> str:
    """What the model saw in training for this conversation, with Ollama's open-assistant convention."""
    if not any(m["role"] == "system" for m in messages) and default_system:
        messages = [{"role": "system", "content": default_system}, *messages]
    if messages[-1]["role"] == "assistant":
        return render_chatml(messages[:-1], add_generation_prompt=True) + messages[-1]["content"]
    return render_chatml(messages, add_generation_prompt=True)


SAMPLE_CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Write a BBj program that prints the numbers 1 to 10."}],
    [
        {"role": "system", "content": "You are an expert BBj developer."},
        {"role": "user", "content": "Open a file in BBj"},
    ],
    [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "How do I declare a string?"},
        {"role": "assistant", "content": '```bbj\nname$ = "BBj"\n```'},
        {"role": "user", "content": "And a number?"},
    ],
    [
        {"role": "user", "content": "Complete: FOR I=1 TO 10"},
        {"role": "assistant", "content": "PRINT I\nNEXT I"},
    ],
    [{"role": "user", "content": 'text with {{ braces }}, "quotes" and a trailing newline\n'}],
]
SAMPLE_FIM = [("rem open a channel\nch = unt\n", "\nread record(ch,key=k$)rec$\n"), ("x = ", "")]


def check_template(template: str, system_prompt: str | None) -> None:
    """Render the TEMPLATE for the samples as Ollama would; raise BbjtuneError on any difference."""
    for messages in SAMPLE_CONVERSATIONS:
        got = render_go_template(template, ollama_values(messages, system_prompt))
        want = expected_chatml(messages, system_prompt)
        if got != want:
            raise BbjtuneError(
                f"the Ollama TEMPLATE renders {got!r} where the model was trained on {want!r}",
                "this is a bug in bbjtune's Modelfile template; please report it",
            )
    for prefix, suffix in SAMPLE_FIM:
        if not suffix:
            continue
        got = render_go_template(template, {"Prompt": prefix, "Suffix": suffix, "System": "", "Messages": []})
        if got != fim_prompt(prefix, suffix):  # the form stage 1 trains on
            raise BbjtuneError(
                f"the Ollama TEMPLATE renders the code-completion form as {got!r}",
                "this is a bug in bbjtune's Modelfile template; please report it",
            )


# ----------------------------------------------------------------------------- the file


@dataclass
class Modelfile:
    gguf: str  # path relative to the Modelfile (./name.q4_k_m.gguf)
    template: str = CHATML_GO_TEMPLATE
    system: str | None = None
    parameters: list[tuple[str, str]] = field(default_factory=list)
    adapter: str | None = None

    def render(self) -> str:
        lines = [f"FROM {self.gguf}"]
        if self.adapter:
            lines.append(f"ADAPTER {self.adapter}")
        lines.append(f'TEMPLATE """{self.template}"""')
        if self.system:
            lines.append(f'SYSTEM """{self.system}"""')
        lines += [f"PARAMETER {k} {v}" for k, v in self.parameters]
        return "\n".join(lines) + "\n"


def build_modelfile(
    gguf_name: str,
    *,
    system_prompt: str | None,
    num_ctx: int,
    temperature: float,
    model_name: str,
    adapter_name: str | None = None,
    repeat_penalty: float = 1.0,
    repeat_last_n: int = 64,
) -> str:
    """The Modelfile text for `gguf_name` (a file beside the Modelfile), validated before it is returned."""
    if system_prompt and '"""' in system_prompt:
        raise BbjtuneError(
            'the system prompt contains """, which a Modelfile cannot quote',
            "set export.ollama.system_prompt to a text without triple quotes",
        )
    check_template(CHATML_GO_TEMPLATE, system_prompt)
    params = [("stop", f'"{t}"') for t in STOP_TOKENS]
    params += [("num_ctx", str(num_ctx)), ("temperature", _number(temperature))]
    # always written: where a Modelfile is silent, Ollama's documented default is 1.1, which no evaluation used
    params += [("repeat_penalty", _number(repeat_penalty)), ("repeat_last_n", str(repeat_last_n))]
    header = (
        f"# {model_name}: a Qwen2.5-Coder model fine-tuned on BBj by bbjtune.\n"
        f"# Create it with:  ollama create {model_name} -f Modelfile\n"
        f"# Then chat:       ollama run {model_name}\n"
    )
    body = Modelfile(
        f"./{gguf_name}",
        system=system_prompt,
        parameters=params,
        adapter=f"./{adapter_name}" if adapter_name else None,
    ).render()
    return header + body


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def parse_modelfile(text: str) -> dict[str, Any]:
    """Read back FROM, ADAPTER, TEMPLATE, SYSTEM and PARAMETERs (the instructions bbjtune writes)."""
    out: dict[str, Any] = {"parameters": []}
    pattern = re.compile(
        r'^(FROM|ADAPTER|TEMPLATE|SYSTEM|PARAMETER)\s+(?:"""(.*?)"""|(.*?))\s*$', re.S | re.M
    )
    for m in pattern.finditer(re.sub(r"(?m)^#.*\n", "", text)):
        word, value = m.group(1), m.group(2) if m.group(2) is not None else m.group(3)
        if word == "PARAMETER":
            key, _, val = value.partition(" ")
            out["parameters"].append((key, val.strip().strip('"')))
        else:
            out[word.lower()] = value
    return out


def ollama_model_name(run_name: str, configured: str | None) -> str:
    name = configured or f"bbj-{run_name}"
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._:/-]*", name):
        raise BbjtuneError(
            f"'{name}' is not a valid Ollama model name",
            "use letters, digits, '.', '_', '-' (set export.ollama.model_name)",
        )
    return name.lower()


def write_modelfile(export_dir: Path, gguf_name: str, **kwargs: Any) -> Path:
    return atomic_write_text(export_dir / "Modelfile", build_modelfile(gguf_name, **kwargs))
