"""The official `openai` client against `bbjtune serve gateway` in front of a real `bbjtune serve gguf`
(llama.cpp on the tiny test model): chat, streaming, completions, models and rating, all over HTTP."""

from __future__ import annotations

import signal

import pytest
from gateway_helpers import free_port, start_bbjtune

from bbjtune.gateway_log import read_log

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def stack(tiny_model_dir, tmp_path_factory):
    from bbjtune.export.gguf import write_gguf

    tmp = tmp_path_factory.mktemp("gateway")
    gguf = write_gguf(tiny_model_dir, tmp / "bbj-tiny.f16.gguf", "f16")
    up_port, gw_port = free_port(), free_port()
    upstream = start_bbjtune(
        ["serve", "gguf", str(gguf), "--port", str(up_port), "--n-ctx", "512", "--threads", "1"],
        f"http://127.0.0.1:{up_port}/v1/models",
    )
    log = tmp / "exchanges.sqlite"
    gateway = start_bbjtune(
        [
            "serve",
            "gateway",
            "--upstream",
            f"http://127.0.0.1:{up_port}/v1",
            "--port",
            str(gw_port),
            "--best-of",
            "2",
            "--compiler",
            "builtin",
            "--log",
            str(log),
        ],
        f"http://127.0.0.1:{gw_port}/v1/models",
    )
    yield f"http://127.0.0.1:{gw_port}/v1", log
    for proc in (gateway, upstream):
        proc.send_signal(signal.SIGINT if proc is gateway else signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(stack):
    return openai.OpenAI(base_url=stack[0], api_key="none", max_retries=0, timeout=120)


def _consistent(extra: dict) -> None:
    """Best-of-2: a failing answer means a second attempt was drawn; anything else stops at one."""
    assert extra["verdict"] in ("pass", "fail", "no-code")
    assert extra["attempts"] == (2 if extra["verdict"] == "fail" else 1)


def test_models_come_from_the_upstream(client):
    assert [m.id for m in client.models.list().data] == ["bbj-tiny"]


def test_chat_through_the_gateway(client, stack):
    raw = client.chat.completions.with_raw_response.create(
        model="bbj-tiny",
        messages=[{"role": "user", "content": "Write a BBj loop"}],
        max_tokens=12,
        temperature=0,
    )
    reply = raw.parse()
    extra = reply.model_extra["bbjtune"]
    assert raw.headers["x-bbjtune-exchange"] == extra["id"]
    assert reply.model == "bbj-tiny" and reply.usage.prompt_tokens > 5
    _consistent(extra)
    row = next(r for r in read_log(stack[1]) if r["id"] == extra["id"])
    assert row["answer"] == reply.choices[0].message.content and row["model"] == "bbj-tiny"
    assert row["upstream_ms"] > 0 and row["latency_ms"] >= row["upstream_ms"]


def test_streaming_chat_through_the_gateway(client, stack):
    chunks = list(
        client.chat.completions.create(
            model="bbj-tiny",
            max_tokens=12,
            temperature=0,
            stream=True,
            messages=[{"role": "user", "content": "Write a BBj loop"}],
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    extra = chunks[-1].model_extra["bbjtune"]
    _consistent(extra)
    row = next(r for r in read_log(stack[1]) if r["id"] == extra["id"])
    assert row["answer"] == text


def test_completion_and_rating_through_the_gateway(client, stack):
    raw = client.completions.with_raw_response.create(
        model="bbj-tiny", prompt="rem print numbers\nfor i=1 to 3\n", max_tokens=8, temperature=0
    )
    reply = raw.parse()
    extra = reply.model_extra["bbjtune"]
    _consistent(extra)
    ex_id = raw.headers["x-bbjtune-exchange"]
    rated = httpx.post(
        f"{stack[0]}/feedback",
        json={"id": ex_id, "rating": "down", "correction": "  print i\nnext i\n"},
        timeout=10,
    )
    assert rated.status_code == 200 and rated.json()["rating"] == -1
    row = next(r for r in read_log(stack[1]) if r["id"] == ex_id)
    assert row["endpoint"] == "completion" and row["answer"] == reply.choices[0].text
    assert row["rating"] == -1 and row["correction"] == "  print i\nnext i\n"
