"""Ollama Modelfile: the Go TEMPLATE renders exactly the ChatML the model was trained on."""

from __future__ import annotations

import pytest

from bbjtune.errors import BbjtuneError
from bbjtune.export.gotemplate import GoTemplateError, render_go_template
from bbjtune.export.modelfile import (
    CHATML_GO_TEMPLATE,
    SAMPLE_CONVERSATIONS,
    build_modelfile,
    check_template,
    expected_chatml,
    ollama_model_name,
    ollama_values,
    parse_modelfile,
)
from bbjtune.models import load_tokenizer
from bbjtune.models.chat_template import QWEN_DEFAULT_SYSTEM, render_chatml
from bbjtune.models.fim import fim_prompt

SYSTEM = "You are an expert BBj developer."
CONVERSATIONS = [
    [{"role": "user", "content": "Print hello in BBj"}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Open a file"}],
    [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d\n\n"},
        {"role": "user", "content": "e"},
    ],
    [{"role": "user", "content": '  leading spaces, {{ .Braces }} and "quotes"\n\n'}],
    [{"role": "user", "content": ""}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("modelfile_system", [None, SYSTEM])
def test_template_renders_like_chatml(messages, modelfile_system):
    got = render_go_template(CHATML_GO_TEMPLATE, ollama_values(messages, modelfile_system))
    if not any(m["role"] == "system" for m in messages) and modelfile_system:
        messages = [{"role": "system", "content": modelfile_system}, *messages]
    assert got == render_chatml(messages, add_generation_prompt=True)


def test_template_matches_the_hf_chat_template_of_the_tokenizer(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    for messages in CONVERSATIONS:
        hf = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert render_go_template(CHATML_GO_TEMPLATE, ollama_values(messages, None)) == hf


def test_no_system_anywhere_gives_qwens_default_system_turn():
    got = render_go_template(CHATML_GO_TEMPLATE, ollama_values([{"role": "user", "content": "hi"}], None))
    assert got.startswith(f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nhi")


def test_a_trailing_assistant_message_is_continued_not_closed():
    messages = [{"role": "user", "content": "Complete"}, {"role": "assistant", "content": "FOR I=1 TO"}]
    got = render_go_template(CHATML_GO_TEMPLATE, ollama_values(messages, None))
    assert got == render_chatml(messages[:1], add_generation_prompt=True) + "FOR I=1 TO"
    assert got == expected_chatml(messages, None)


def test_fim_form_for_code_completion():
    data = {"Prompt": "for i = 1 to 10\n", "Suffix": "\nnext i\n", "System": SYSTEM, "Messages": []}
    assert render_go_template(CHATML_GO_TEMPLATE, data) == fim_prompt("for i = 1 to 10\n", "\nnext i\n")
    assert fim_prompt("a", "b") == "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"


def test_modelfile_has_from_template_stops_params_and_system():
    text = build_modelfile(
        "run.q4_k_m.gguf", system_prompt=SYSTEM, num_ctx=8192, temperature=0.2, model_name="bbj-run"
    )
    parsed = parse_modelfile(text)
    assert parsed["from"] == "./run.q4_k_m.gguf"
    assert parsed["template"] == CHATML_GO_TEMPLATE
    assert parsed["system"] == SYSTEM
    params = parsed["parameters"]
    assert ("stop", "<|im_end|>") in params and ("stop", "<|endoftext|>") in params
    assert ("num_ctx", "8192") in params and ("temperature", "0.2") in params
    # written even when off: a silent Modelfile gets Ollama's 1.1, which no evaluation measured
    assert ("repeat_penalty", "1") in params and ("repeat_last_n", "64") in params
    assert "ollama create bbj-run -f Modelfile" in text
    # what Ollama will send for a chat with the Modelfile's SYSTEM is the training format
    data = ollama_values([{"role": "user", "content": "x"}], parsed["system"])
    assert render_go_template(parsed["template"], data) == render_chatml(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "x"}], add_generation_prompt=True
    )


def test_modelfile_without_system_prompt_has_no_system_line():
    text = build_modelfile("m.gguf", system_prompt=None, num_ctx=2048, temperature=0.0, model_name="m")
    assert "SYSTEM" not in text and "PARAMETER temperature 0" in text
    text = build_modelfile(
        "m.gguf",
        system_prompt=None,
        num_ctx=2048,
        temperature=0.0,
        model_name="m",
        repeat_penalty=1.1,
        repeat_last_n=32,
    )
    assert "PARAMETER repeat_penalty 1.1\nPARAMETER repeat_last_n 32" in text


def test_bad_inputs():
    with pytest.raises(BbjtuneError, match='triple quotes|"""'):
        build_modelfile("m.gguf", system_prompt='say """hi"""', num_ctx=1, temperature=0.1, model_name="m")
    with pytest.raises(BbjtuneError, match="not a valid Ollama model name"):
        ollama_model_name("x", "bad name!")
    assert ollama_model_name("Quickstart", None) == "bbj-quickstart"


def test_a_wrong_template_is_caught():
    broken = CHATML_GO_TEMPLATE.replace(
        "{{ $m.Content }}<|im_end|>\n{{ else if", "{{ $m.Content }}\n{{ else if"
    )
    assert broken != CHATML_GO_TEMPLATE
    with pytest.raises(BbjtuneError, match="renders"):
        check_template(broken, None)
    check_template(CHATML_GO_TEMPLATE, SYSTEM)  # and the real one passes
    assert len(SAMPLE_CONVERSATIONS) >= 4


# ----------------------------------------------------------------------------- the Go template subset


@pytest.mark.parametrize(
    "template, data, want",
    [
        ("a {{ .X }} b", {"X": 1}, "a 1 b"),
        ("a  {{- .X -}}  b", {"X": "x"}, "axb"),
        ("a\n{{- if .X }}yes{{ else }}no{{ end }}", {"X": ""}, "ano"),
        ('{{ if eq .X "k" }}1{{ else if eq .X "j" }}2{{ else }}3{{ end }}', {"X": "j"}, "2"),
        (
            "{{ range $i, $m := .L }}{{ $i }}={{ $m.N }};{{ end }}",
            {"L": [{"N": "a"}, {"N": "b"}]},
            "0=a;1=b;",
        ),
        ("{{ range .L }}[{{ . }}]{{ end }}", {"L": ["p", "q"]}, "[p][q]"),
        (
            "{{ range $i, $_ := .L }}{{ $last := eq (len (slice $.L $i)) 1 }}{{ if $last }}L{{ end }}{{ end }}",
            {"L": [1, 2, 3]},
            "L",
        ),
        ("{{ if and .A (not .B) }}ok{{ end }}{{ if or .B .C }}c{{ end }}", {"A": 1, "B": 0, "C": "x"}, "okc"),
        ('{{ "q\\"\\n" }}', {}, 'q"\n'),
        ("{{/* a comment */}}x", {}, "x"),
    ],
)
def test_go_template_subset(template, data, want):
    assert render_go_template(template, data) == want


@pytest.mark.parametrize(
    "template",
    ["{{ if .X }}", "{{ .X ", '{{ template "x" }}', '{{ printf "%s" .X }}', "{{ $undefined }}", "{{ end }}"],
)
def test_go_template_refuses_what_it_does_not_support(template):
    with pytest.raises(GoTemplateError):
        render_go_template(template, {"X": 1})
