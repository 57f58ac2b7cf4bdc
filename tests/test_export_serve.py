"""`bbjtune serve gguf`: a real llama-cpp-python OpenAI-compatible server on loopback, asked over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, run_cli

from bbjtune.models.chat_template import render_chatml

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")
httpx = pytest.importorskip("httpx")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    from bbjtune.export.gguf import write_gguf

    gguf = write_gguf(tiny_model_dir, tmp_path_factory.mktemp("serve") / "bbj-tiny.f16.gguf", "f16")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bbjtune", "serve", "gguf", str(gguf), "--port", str(port),
                             "--n-ctx", "512", "--threads", "1"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"server did not start: {proc.stdout.read()}")
        time.sleep(0.5)
    yield base
    proc.terminate()    # SIGTERM to bbjtune must stop the llama.cpp server it started
    assert proc.wait(timeout=30) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/models", timeout=2)


def test_models_endpoint_names_the_model(server):
    data = httpx.get(f"{server}/models", timeout=10).json()
    assert [m["id"] for m in data["data"]] == ["bbj-tiny"]


def test_chat_uses_the_chatml_template_from_the_gguf(server):
    messages = [{"role": "system", "content": "You are a BBj expert."},
                {"role": "user", "content": "Write a BBj loop"}]
    chat = httpx.post(f"{server}/chat/completions", timeout=60, json={
        "model": "bbj-tiny", "messages": messages, "max_tokens": 12, "temperature": 0.0}).json()
    assert chat["choices"][0]["finish_reason"] in ("stop", "length")
    assert chat["usage"]["prompt_tokens"] > 10
    # the same prompt written out as ChatML text gives the same tokens and the same greedy answer
    completion = httpx.post(f"{server}/completions", timeout=60, json={
        "model": "bbj-tiny", "prompt": render_chatml(messages, add_generation_prompt=True),
        "max_tokens": 12, "temperature": 0.0}).json()
    assert completion["usage"]["prompt_tokens"] == chat["usage"]["prompt_tokens"]
    assert completion["choices"][0]["text"] == chat["choices"][0]["message"]["content"]


def test_only_loopback_by_default():
    res = run_cli("serve", "gguf", "--help")
    assert "127.0.0.1" in res.stdout
    res = run_cli("serve", "gguf", "/nonexistent/model.gguf")
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
