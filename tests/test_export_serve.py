"""`bbjtune serve gguf`: a real llama-cpp-python OpenAI-compatible server on loopback, asked over HTTP."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from gateway_helpers import free_port, start_bbjtune

from bbjtune.models.chat_template import render_chatml

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")
httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    from bbjtune.export.gguf import write_gguf

    gguf = write_gguf(tiny_model_dir, tmp_path_factory.mktemp("serve") / "bbj-tiny.f16.gguf", "f16")
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    proc = start_bbjtune(
        ["serve", "gguf", str(gguf), "--port", str(port), "--n-ctx", "512", "--threads", "1"],
        f"{base}/models",
    )
    yield base
    proc.terminate()  # SIGTERM to bbjtune must stop the llama.cpp server it started
    assert proc.wait(timeout=30) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/models", timeout=2)
    # every layer on the GPU where this llama.cpp build has one, else the CPU, and the start line says which
    from bbjtune.serve.cli import gpu_offload_possible

    where = "on the GPU" if gpu_offload_possible() else "on the CPU"
    assert f'as "bbj-tiny" {where} at {base}' in proc.stdout.read()


def test_models_endpoint_names_the_model(server):
    data = httpx.get(f"{server}/models", timeout=10).json()
    assert [m["id"] for m in data["data"]] == ["bbj-tiny"]


def test_chat_uses_the_chatml_template_from_the_gguf(server):
    messages = [
        {"role": "system", "content": "You are a BBj expert."},
        {"role": "user", "content": "Write a BBj loop"},
    ]
    chat = httpx.post(
        f"{server}/chat/completions",
        timeout=60,
        json={"model": "bbj-tiny", "messages": messages, "max_tokens": 12, "temperature": 0.0},
    ).json()
    assert chat["choices"][0]["finish_reason"] in ("stop", "length")
    assert chat["usage"]["prompt_tokens"] > 10
    # the same prompt written out as ChatML text gives the same tokens and the same greedy answer
    completion = httpx.post(
        f"{server}/completions",
        timeout=60,
        json={
            "model": "bbj-tiny",
            "prompt": render_chatml(messages, add_generation_prompt=True),
            "max_tokens": 12,
            "temperature": 0.0,
        },
    ).json()
    assert completion["usage"]["prompt_tokens"] == chat["usage"]["prompt_tokens"]
    assert completion["choices"][0]["text"] == chat["choices"][0]["message"]["content"]


def test_only_loopback_by_default():
    res = run_cli("serve", "gguf", "--help")
    assert "127.0.0.1" in res.stdout
    res = run_cli("serve", "gguf", "/nonexistent/model.gguf")
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_files_that_are_not_gguf_are_refused_before_a_server_starts(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"<html>not found</html>")  # what a failed download leaves behind
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    for path, said in ((fake, "is not a GGUF file"), (other, "neither a .gguf file nor a config")):
        res = run_cli("serve", "gguf", str(path), "--port", "1")
        assert res.returncode == 2 and said in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_busy_port_is_said_before_the_model_loads(tiny_model_dir, tmp_path):
    import socket
    import time

    from bbjtune.export.gguf import write_gguf

    gguf = write_gguf(tiny_model_dir, tmp_path / "bbj-tiny.f16.gguf", "f16")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        res = run_cli("serve", "gguf", str(gguf), "--port", str(port))
    assert res.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in res.stderr, res.stderr
    assert "--port" in res.stderr and "Traceback" not in res.stderr
    assert time.monotonic() - t0 < 30  # no model was loaded and no server started


# ----------------------------------------------------------------------------- code completion (FIM)


def _completion(server: str, **body) -> dict:
    return httpx.post(
        f"{server}/completions",
        timeout=60,
        json={"model": "bbj-tiny", "temperature": 0.0, "max_tokens": 8, **body},
    ).json()


def test_fim_prompt_as_editors_send_it(server, tiny_model_dir):
    """Continue's raw FIM prompt and OpenAI's `suffix` field reach the model as the same tokens."""
    from bbjtune.models import load_tokenizer
    from bbjtune.models.fim import fim_prompt

    prefix, suffix = 'ch = unt\nopen (ch)"notes.txt"\nread (ch)', "\nclose (ch)\n"
    raw = _completion(server, prompt=fim_prompt(prefix, suffix))
    tok = load_tokenizer(str(tiny_model_dir))
    # the FIM markers are read as the single tokens the model was trained on, not as text
    assert raw["usage"]["prompt_tokens"] == len(
        tok(fim_prompt(prefix, suffix), add_special_tokens=False)["input_ids"]
    )
    assert raw["usage"]["prompt_tokens"] < len(tok(fim_prompt(prefix, suffix).replace("|", "/"))["input_ids"])
    with_suffix = _completion(server, prompt=prefix, suffix=suffix)
    assert with_suffix["usage"]["prompt_tokens"] == raw["usage"]["prompt_tokens"]
    assert with_suffix["choices"][0]["text"] == raw["choices"][0]["text"]


def test_fim_completion_ends_on_the_models_end_tokens(server, tiny_model_dir):
    from bbjtune.models import load_tokenizer
    from bbjtune.models.fim import fim_prompt

    tok = load_tokenizer(str(tiny_model_dir))
    prompt = fim_prompt("for i = 1 to 3\n", "\nnext i\n")
    for token in ("<|endoftext|>", "<|file_sep|>"):  # what ends a middle (and a repository-level sample)
        forced = _completion(server, prompt=prompt, logit_bias={str(tok.convert_tokens_to_ids(token)): 100.0})
        assert (
            forced["choices"][0]["finish_reason"] == "stop" and forced["usage"]["completion_tokens"] == 0
        ), token


def test_fim_request_rewrite():
    from bbjtune.serve.llama_server import rewrite_completion_request

    ids = {"<|fim_prefix|>": 7, "<|fim_suffix|>": 8, "<|fim_middle|>": 9}
    out = json.loads(
        rewrite_completion_request(
            json.dumps({"prompt": "a = ", "suffix": "\nb = 2\n", "max_tokens": 4}).encode(), ids
        )
    )
    assert out == {
        "prompt": "<|fim_prefix|>a = <|fim_suffix|>\nb = 2\n<|fim_middle|>",
        "max_tokens": 4,
        "logit_bias": {"7": -100.0, "8": -100.0, "9": -100.0},
    }
    # the client's own bias wins; plain completions and other bodies pass untouched
    out = json.loads(
        rewrite_completion_request(
            json.dumps(
                {"prompt": "<|fim_prefix|>x<|fim_suffix|>y<|fim_middle|>", "logit_bias": {"7": 5.0}}
            ).encode(),
            ids,
        )
    )
    assert out["logit_bias"] == {"7": 5.0, "8": -100.0, "9": -100.0}
    for body in (b'{"prompt": "print 1"}', b"not json", b'{"prompt": ["a"]}'):
        assert rewrite_completion_request(body, ids) == body


def test_sampling_defaults_fill_in_only_what_the_request_leaves_out():
    from bbjtune.serve.llama_server import CHAT_PATH, COMPLETIONS_PATH, rewrite_request, sampling_defaults

    def with_sampling_defaults(body, defaults, path=CHAT_PATH):
        return rewrite_request(path, body, {}, defaults)

    defaults = sampling_defaults(1.0)
    out = json.loads(with_sampling_defaults(b'{"messages": [], "temperature": 0.7, "top_k": null}', defaults))
    assert out == {"messages": [], "temperature": 0.7, "repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0}
    mine = b'{"prompt": "x", "repeat_penalty": 1.3, "top_k": 20, "min_p": 0.1}'
    assert with_sampling_defaults(mine, defaults, COMPLETIONS_PATH) == mine
    for body in (b"not json", b"[1, 2]"):
        assert with_sampling_defaults(body, defaults) == body


def test_a_request_without_sampling_settings_gets_bbjtunes_not_llama_cpps(server):
    # llama-cpp-python's server applies repeat_penalty 1.1, top_k 40 and min_p 0.05 where a request is
    # silent, and OpenAI clients (Continue, the gateway, eval --backend http) are: a model nobody
    # measured. Served, a silent request samples like one asking for bbjtune's settings (no penalty, no
    # cut), and unlike one asking for llama.cpp's. Sampled with a fixed seed, where every setting counts.
    messages = [{"role": "user", "content": "Write a BBj loop that prints 1 to 10"}]

    def answer(**extra):
        body = {"model": "bbj-tiny", "messages": messages, "max_tokens": 48, "temperature": 1.0, "seed": 7}
        reply = httpx.post(f"{server}/chat/completions", timeout=60, json={**body, **extra}).json()
        return reply["choices"][0]["message"]["content"]

    silent = answer()
    assert silent == answer(repeat_penalty=1.0, top_k=0, min_p=0.0)
    assert silent != answer(repeat_penalty=1.1, top_k=40, min_p=0.05)
