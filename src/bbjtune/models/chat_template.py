"""Qwen2.5's ChatML conversation format, with the loss markers training needs.

Qwen2.5 (Base and Instruct, Coder included) formats a conversation as

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n{answer}<|im_end|>\\n

and inserts a default system turn when the conversation has none. TRL's assistant-only loss needs
`{% generation %}` … `{% endgeneration %}` around each assistant answer; the template below has them
and renders exactly the same text as Qwen's own (tests compare it with `render_chatml`, an
independent plain-Python statement of the format, and, opt-in, with the real model's template).
The trained span is the answer plus its `<|im_end|>`, so the model learns to stop.
"""

from __future__ import annotations

import json
from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

_TOOLS_INTRO = (
    "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>"
)
_TOOLS_OUTRO = (
    "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, '
    '\\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n'
)

# One template, two forms: with the markers (what bbjtune saves) and without them.
_TEMPLATE = (
    "{%- set default_system = '" + QWEN_DEFAULT_SYSTEM + "' -%}\n"
    "{%- if tools -%}\n"
    "  {{- '<|im_start|>system\\n' -}}\n"
    "  {{- messages[0]['content'] if messages[0]['role'] == 'system' else default_system -}}\n"
    '  {{- "' + _TOOLS_INTRO + '" -}}\n'
    "  {%- for tool in tools -%}{{- '\\n' -}}{{- tool | tojson -}}{%- endfor -%}\n"
    '  {{- "' + _TOOLS_OUTRO + '" -}}\n'
    "{%- elif messages[0]['role'] == 'system' -%}\n"
    "  {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' -}}\n"
    "{%- else -%}\n"
    "  {{- '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' -}}\n"
    "{%- endif -%}\n"
    "{%- for message in messages -%}\n"
    "  {%- if message.role == 'user' or (message.role == 'system' and not loop.first) -%}\n"
    "    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n"
    "  {%- elif message.role == 'assistant' -%}\n"
    "    {{- '<|im_start|>assistant' -}}\n"
    "    {%- if not message.tool_calls -%}{{- '\\n' -}}{%- endif -%}\n"
    "    @@GEN@@"
    "{%- if message.tool_calls -%}\n"
    "      {%- if message.content -%}{{- '\\n' + message.content -}}{%- endif -%}\n"
    "      {%- for call in message.tool_calls -%}\n"
    "        {%- set fn = call.function if call.function is defined else call -%}\n"
    '        {{- \'\\n<tool_call>\\n{"name": "\' + fn.name + \'", "arguments": \' -}}\n'
    "        {{- fn.arguments | tojson -}}{{- '}\\n</tool_call>' -}}\n"
    "      {%- endfor -%}\n"
    "    {%- else -%}{{- message.content -}}{%- endif -%}\n"
    "    {{- '<|im_end|>' -}}@@ENDGEN@@{{- '\\n' -}}\n"
    "  {%- elif message.role == 'tool' -%}\n"
    "    {%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}\n"
    "    {{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' -}}\n"
    "    {%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}\n"
    "  {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}\n"
)

CHATML_TEMPLATE = _TEMPLATE.replace("@@GEN@@", "").replace("@@ENDGEN@@", "")
CHATML_TRAINING_TEMPLATE = _TEMPLATE.replace("@@GEN@@", "{%- generation -%}").replace(
    "@@ENDGEN@@", "{%- endgeneration -%}"
)


def render_chatml(
    messages: list[dict[str, Any]],
    add_generation_prompt: bool = False,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The ChatML text of a conversation, written out in plain Python (the format's specification)."""
    out = []
    first_is_system = bool(messages) and messages[0]["role"] == "system"
    if tools:
        out.append(
            IM_START + "system\n" + (messages[0]["content"] if first_is_system else QWEN_DEFAULT_SYSTEM)
        )
        out.append(json.loads('"' + _TOOLS_INTRO + '"'))
        out.extend("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
        out.append(json.loads('"' + _TOOLS_OUTRO + '"'))
    else:
        system = messages[0]["content"] if first_is_system else QWEN_DEFAULT_SYSTEM
        out.append(f"{IM_START}system\n{system}{IM_END}\n")
    for i, m in enumerate(messages):
        role = m["role"]
        if role == "user" or (role == "system" and i > 0):
            out.append(f"{IM_START}{role}\n{m['content']}{IM_END}\n")
        elif role == "assistant" and not m.get("tool_calls"):
            out.append(f"{IM_START}assistant\n{m['content']}{IM_END}\n")
        elif role == "assistant":
            out.append(f"{IM_START}assistant" + (f"\n{m['content']}" if m.get("content") else ""))
            for call in m["tool_calls"]:
                fn = call.get("function", call)
                out.append(
                    '\n<tool_call>\n{"name": "'
                    + fn["name"]
                    + '", "arguments": '
                    + json.dumps(fn["arguments"], ensure_ascii=False)
                    + "}\n</tool_call>"
                )
            out.append(f"{IM_END}\n")
        elif role == "tool":
            if i == 0 or messages[i - 1]["role"] != "tool":
                out.append(f"{IM_START}user")
            out.append(f"\n<tool_response>\n{m['content']}\n</tool_response>")
            if i == len(messages) - 1 or messages[i + 1]["role"] != "tool":
                out.append(f"{IM_END}\n")
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out)


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and "generation" in template and "endgeneration" in template


def install_training_template(tokenizer: Any) -> None:
    """Give a Qwen ChatML tokenizer the marked template, after checking it renders the same text.

    Raises ValueError when the tokenizer's own template renders a sample conversation differently
    (then it is not Qwen ChatML and replacing it would change the model's prompt format).
    """
    own = getattr(tokenizer, "chat_template", None)
    if own and own != CHATML_TRAINING_TEMPLATE:
        sample = [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"},
            {"role": "user", "content": "V"},
        ]
        theirs = tokenizer.apply_chat_template(sample, tokenize=False, add_generation_prompt=True)
        if theirs != render_chatml(sample, add_generation_prompt=True):
            raise ValueError("the tokenizer's chat template is not Qwen ChatML")
    tokenizer.chat_template = CHATML_TRAINING_TEMPLATE
