"""Opt-in (`pytest -m real`): the real Qwen2.5-Coder-0.5B-Instruct GGUF from PyPI (benchmarks/fetch_qwen05b.py).

- bbjtune's ChatML templates (Jinja and the Ollama Go template) render exactly what the real
  model's own chat template renders;
- the whole export path on the real model: GGUF → HF → LoRA → merge → f16/q8_0/q4_k_m → verify →
  generation through llama.cpp (benchmarks/export_qwen05b.py, ~5 min on 2 cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.real

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from fetch_qwen05b import default_gguf_path  # noqa: E402

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "compile_bbj",
            "description": "Compile BBj source",
            "parameters": {"type": "object", "properties": {"src": {"type": "string"}}},
        },
    }
]
CONVERSATIONS = [
    [{"role": "user", "content": "Write a BBj loop"}],
    [{"role": "system", "content": "You are a BBj expert."}, {"role": "user", "content": "hi"}],
    [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d\n\n"},
        {"role": "user", "content": "e"},
    ],
    [{"role": "user", "content": "é ü {{ x }} {% raw %}"}, {"role": "assistant", "content": ""}],
    [
        {"role": "user", "content": "a"},
        {"role": "system", "content": "late system"},
        {"role": "user", "content": "b"},
    ],
]
TOOL_CONVERSATIONS = [
    [{"role": "system", "content": "S"}, {"role": "user", "content": "compile it"}],
    [
        {"role": "user", "content": "compile"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "compile_bbj", "arguments": {"src": "print 1"}}}
            ],
        },
        {"role": "tool", "content": "ok"},
        {"role": "tool", "content": "no errors"},
        {"role": "assistant", "content": "It compiles."},
    ],
    [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [{"name": "compile_bbj", "arguments": {"src": "x"}}],
        },
        {"role": "tool", "content": "error at line 1"},
    ],
]


@pytest.fixture(scope="module")
def real_gguf():
    path = default_gguf_path()
    if not path.exists():
        pytest.skip(f"{path} not found: run python benchmarks/fetch_qwen05b.py")
    return path


@pytest.fixture(scope="module")
def real_template(real_gguf):
    import gguf

    return gguf.GGUFReader(str(real_gguf)).fields["tokenizer.chat_template"].contents()


def _render(tokenizer, template, messages, tools=None, gen=True):
    tokenizer.chat_template = template
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=gen)


def test_our_chat_templates_render_like_the_real_qwen_template(real_template, tiny_model_dir):
    from bbjtune.models import load_tokenizer
    from bbjtune.models.chat_template import CHATML_TEMPLATE, CHATML_TRAINING_TEMPLATE, render_chatml

    tok = load_tokenizer(str(tiny_model_dir))
    for messages in CONVERSATIONS:
        for gen in (True, False):
            want = _render(tok, real_template, messages, gen=gen)
            assert _render(tok, CHATML_TEMPLATE, messages, gen=gen) == want
            assert _render(tok, CHATML_TRAINING_TEMPLATE, messages, gen=gen) == want
            assert render_chatml(messages, add_generation_prompt=gen) == want
    for messages in TOOL_CONVERSATIONS:
        want = _render(tok, real_template, messages, tools=TOOLS)
        assert _render(tok, CHATML_TEMPLATE, messages, tools=TOOLS) == want
        assert render_chatml(messages, add_generation_prompt=True, tools=TOOLS) == want


def test_ollama_template_renders_like_the_real_qwen_template(real_template, tiny_model_dir):
    from bbjtune.export.gotemplate import render_go_template
    from bbjtune.export.modelfile import CHATML_GO_TEMPLATE, ollama_values
    from bbjtune.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    for messages in CONVERSATIONS[:3]:
        assert render_go_template(CHATML_GO_TEMPLATE, ollama_values(messages, None)) == _render(
            tok, real_template, messages
        )


def test_real_model_export_end_to_end(real_gguf, tmp_path):
    t0 = time.time()
    report_path = tmp_path / "report.json"
    res = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "export_qwen05b.py"),
            "--gguf",
            str(real_gguf),
            "--out",
            str(tmp_path / "out"),
            "--json",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["verify_ok"], {q: r["failures"] for q, r in report["verify"].items()}
    for quant, r in report["verify"].items():
        assert r["tokenization_identical"], quant
    assert report["verify"]["f16"]["top1_agreement"] > 0.95
    answer = report["generation"]
    assert answer["finish_reason"] == "stop" and answer["text"].strip()  # it stops by itself
    print(json.dumps({"seconds": round(time.time() - t0), **report["times_s"]}))
