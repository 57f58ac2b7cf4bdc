"""Generation backends: batched = one at a time, stopping on <|im_end|>, a real HTTP server, a GGUF."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from train_helpers import overfit_chat

from bbjtune.errors import BbjtuneError
from bbjtune.models.backend import make_backend
from bbjtune.models.generate import Request, Sampling, TransformersBackend, truncate_at_stop
from bbjtune.models.generate_http import HttpBackend

CONVERSATION = [{"role": "user", "content": "Say hi in BBj"}, {"role": "assistant", "content": 'print "hi"'}]
PROMPTS = [
    "Write a BBj program that prints hello",
    "x",
    "How do I open a file in BBj? Explain channels and the UNT function in detail.",
    "sort an array",
]


def chat(text: str) -> Request:
    return Request(messages=[{"role": "user", "content": text}])


@pytest.fixture(scope="module")
def varied_model(tiny_model_dir):
    """tiny:test with larger random weights, so different prompts give different greedy answers."""
    import torch

    from bbjtune.models import load_model, load_tokenizer

    model = load_model(str(tiny_model_dir), dtype="float32")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model, load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def stopping_model(tiny_model_dir, tmp_path_factory):
    """tiny:test trained until it answers CONVERSATION and ends its turn with <|im_end|>; saved to disk."""
    out = tmp_path_factory.mktemp("stopping-model")
    assert overfit_chat(tiny_model_dir, CONVERSATION, out, steps=80) < 0.1
    return out


# ----------------------------------------------------------------------------- transformers


def test_batched_left_padded_generation_equals_one_prompt_at_a_time(varied_model):
    model, tok = varied_model
    requests = [chat(p) for p in PROMPTS]
    sampling = Sampling(temperature=0.0, max_new_tokens=16)
    one = dict(TransformersBackend(model, tok, batch_size=1).generate(requests, sampling))
    batched = dict(TransformersBackend(model, tok, batch_size=4).generate(requests, sampling))
    texts = [one[i][0].text for i in range(4)]
    assert len(set(texts)) == 4, "the prompts should give different answers, or the test proves nothing"
    assert [batched[i][0].text for i in range(4)] == texts
    assert all(c[0].finish_reason == "length" and c[0].tokens == 16 for c in batched.values())


def test_generation_stops_on_im_end_even_when_the_model_only_knows_endoftext(stopping_model):
    from bbjtune.models import load_model, load_tokenizer

    model = load_model(str(stopping_model), dtype="float32")
    tok = load_tokenizer(str(stopping_model))
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    backend = TransformersBackend(model, tok, batch_size=2)
    assert tok.convert_tokens_to_ids("<|im_end|>") in backend.stop_ids
    results = dict(
        backend.generate(
            [chat("Say hi in BBj"), chat("Say hi in BBj")], Sampling(temperature=0, max_new_tokens=40)
        )
    )
    for completions in results.values():
        assert completions[0].text == 'print "hi"'
        assert completions[0].finish_reason == "stop" and completions[0].tokens < 40


def test_window_repeat_penalty_is_llama_cpps_rule_over_the_last_n_tokens():
    import torch

    from bbjtune.models.generate import window_repeat_penalty

    scores = torch.tensor([[2.0, -2.0, 4.0, 1.0, -1.0]])
    ids = torch.tensor([[3, 0, 1, 1]])  # token 3 is outside a window of the last 3
    out = window_repeat_penalty(2.0, 3)(ids, scores.clone())
    assert out.tolist() == [[1.0, -4.0, 4.0, 1.0, -1.0]]  # positive halved, negative doubled, once each
    whole = window_repeat_penalty(2.0, 0)(ids, scores.clone())
    assert whole.tolist() == [[1.0, -4.0, 4.0, 0.5, -1.0]]


def test_a_repeat_penalty_keeps_greedy_answers_from_reusing_recent_tokens(varied_model):
    model, tok = varied_model
    requests = [chat(p) for p in PROMPTS]
    plain = dict(
        TransformersBackend(model, tok, batch_size=4).generate(
            requests, Sampling(temperature=0.0, max_new_tokens=24)
        )
    )
    strict = Sampling(temperature=0.0, max_new_tokens=24, repeat_penalty=1e6, repeat_last_n=6)
    backend = TransformersBackend(model, tok, batch_size=4)
    penalised = dict(backend.generate(requests, strict))

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    def repeats(seq: list[int], n: int) -> int:
        return sum(1 for k, t in enumerate(seq) if t in seq[max(0, k - n) : k])

    before = sum(repeats(ids(plain[i][0].text), 5) for i in plain)
    assert before > 0, "the plain answers should repeat themselves, or the test proves nothing"
    for i in penalised:  # the window covers the prompt's tail too; within the answer no token comes back
        assert repeats(ids(penalised[i][0].text), 5) == 0, penalised[i][0].text
    assert [penalised[i][0].text for i in penalised] != [plain[i][0].text for i in plain]


def test_text_requests_stop_at_stop_strings(varied_model):
    model, tok = varied_model
    backend = TransformersBackend(model, tok, batch_size=2)
    free = dict(backend.generate([Request(text="def f(x):\n")], Sampling(temperature=0, max_new_tokens=24)))[
        0
    ][0].text
    stop = free[3:6]
    assert stop, "need some generated text to stop on"
    cut = dict(
        backend.generate(
            [Request(text="def f(x):\n", stop=(stop,))], Sampling(temperature=0, max_new_tokens=24)
        )
    )
    assert cut[0][0].text == free[: free.index(stop)] and cut[0][0].finish_reason == "stop"


def test_n_samples_with_a_seed_are_reproducible(varied_model):
    model, tok = varied_model
    backend = TransformersBackend(model, tok, batch_size=4)
    sampling = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=12, n=3, seed=7)
    first = dict(backend.generate([chat("a"), chat("b")], sampling))
    again = dict(backend.generate([chat("a"), chat("b")], sampling))
    assert all(len(v) == 3 for v in first.values())
    assert [[c.text for c in first[i]] for i in (0, 1)] == [[c.text for c in again[i]] for i in (0, 1)]
    assert len({c.text for c in first[0]}) > 1, "temperature 1 should give different samples"


def test_an_adapter_is_applied_on_top_of_its_base(tiny_model_dir, tmp_path):
    from export_fixtures import make_adapter

    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", scale=0.5)
    base = make_backend("transformers", model=str(tiny_model_dir), dtype="float32")
    tuned = make_backend("transformers", model=str(tiny_model_dir), adapter=str(adapter), dtype="float32")
    sampling = Sampling(temperature=0, max_new_tokens=12)
    requests = [chat(p) for p in PROMPTS]
    a = [c[0].text for _, c in sorted(base.generate(requests, sampling))]
    b = [c[0].text for _, c in sorted(tuned.generate(requests, sampling))]
    assert a != b
    assert tuned.describe()["adapter"] == str(adapter)
    with pytest.raises(BbjtuneError, match="not a LoRA adapter"):
        make_backend("transformers", model=str(tiny_model_dir), adapter=str(tmp_path))


def test_truncate_at_stop_uses_the_earliest_stop():
    assert truncate_at_stop("a\ndef b\nclass c", ["\nclass", "\ndef"]) == ("a", True)
    assert truncate_at_stop("abc", ["x"]) == ("abc", False)


# ----------------------------------------------------------------------------- http


class FakeOpenAI(BaseHTTPRequestHandler):
    """A small OpenAI-compatible server: /v1/models, /v1/chat/completions, /v1/completions."""

    calls: list[dict] = []
    flaky_seen: set = set()

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, code: int, body: dict | str) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "bbj-test", "object": "model"}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.calls.append({"path": self.path, **body})
        if self.path == "/v1/completions":
            return self._send(
                200,
                {
                    "choices": [{"text": "    return 1\n\ndef other():\n", "finish_reason": "stop"}],
                    "usage": {"completion_tokens": 9},
                },
            )
        prompt = body["messages"][-1]["content"]
        if prompt == "flaky" and (prompt, body["seed"]) not in FakeOpenAI.flaky_seen:
            FakeOpenAI.flaky_seen.add((prompt, body["seed"]))
            return self._send(500, {"error": "overloaded"})
        if prompt == "bad":
            return self._send(400, {"error": {"message": "max_tokens is too large"}})
        if prompt == "slow":
            time.sleep(1.5)
        if prompt == "garbage":
            return self._send(200, "<html>proxy error</html>")
        content = "" if prompt == "empty" else f'```bbj\nprint "{prompt}"\nend\n```'
        self._send(
            200,
            {
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"completion_tokens": 7},
            },
        )


@pytest.fixture()
def openai_server():
    FakeOpenAI.calls = []
    FakeOpenAI.flaky_seen = set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_http_backend_against_a_local_server(openai_server):
    backend = HttpBackend(openai_server, timeout_s=0.8, retries=2, backoff_s=0.01, concurrency=4)
    assert backend.model == "bbj-test"  # asked the server, none was named
    prompts = ["hello", "flaky", "bad", "slow", "empty", "garbage"]
    sampling = Sampling(temperature=0.5, top_p=0.9, max_new_tokens=50, n=2, seed=11)
    results = dict(backend.generate([chat(p) for p in prompts], sampling))
    by = {p: results[i] for i, p in enumerate(prompts)}
    assert [c.text for c in by["hello"]] == ['```bbj\nprint "hello"\nend\n```'] * 2
    assert all(c.error is None and c.finish_reason == "stop" and c.tokens == 7 for c in by["hello"])
    assert all(c.error is None for c in by["flaky"]), "a 500 must be retried"
    assert all("HTTP 400" in c.error and "max_tokens" in c.error for c in by["bad"])
    assert all("within 0.8 s" in c.error and "3 attempts" in c.error for c in by["slow"])
    assert all(
        c.error is None and c.text == "" for c in by["empty"]
    )  # empty answers are judged by the caller
    assert all("not an OpenAI completion" in c.error for c in by["garbage"])
    hello_calls = [c for c in FakeOpenAI.calls if c.get("messages", [{}])[-1].get("content") == "hello"]
    assert sorted(c["seed"] for c in hello_calls) == [11, 12]
    assert {(c["model"], c["temperature"], c["top_p"], c["max_tokens"]) for c in hello_calls} == {
        ("bbj-test", 0.5, 0.9, 50)
    }
    assert not any("repeat_penalty" in c for c in hello_calls)  # off: nothing a server could misread
    assert (
        sum(1 for c in FakeOpenAI.calls if c.get("messages", [{}])[-1].get("content") == "bad") == 2
    )  # no retry on 4xx


def test_http_text_requests_use_the_completions_endpoint_and_stop_strings(openai_server):
    backend = HttpBackend(openai_server, model="m", retries=0)
    out = dict(
        backend.generate(
            [Request(text="def f():\n", stop=("\ndef ",))], Sampling(temperature=0, max_new_tokens=20)
        )
    )
    assert out[0][0].text == "    return 1\n" and out[0][0].finish_reason == "stop"
    call = FakeOpenAI.calls[-1]
    assert call["path"] == "/v1/completions" and call["prompt"] == "def f():\n" and "\ndef " in call["stop"]
    list(
        backend.generate(
            [Request(text="def f():\n")], Sampling(temperature=0, repeat_penalty=1.1, repeat_last_n=32)
        )
    )
    assert (FakeOpenAI.calls[-1]["repeat_penalty"], FakeOpenAI.calls[-1]["repeat_last_n"]) == (1.1, 32)


def test_an_unreachable_endpoint_fails_every_sample_quickly_with_the_reason():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    backend = HttpBackend(
        f"http://127.0.0.1:{port}/v1",
        model="m",
        timeout_s=2,
        retries=2,
        backoff_s=0.01,
        concurrency=2,
        max_connect_failures=3,
    )
    t0 = time.monotonic()
    results = dict(backend.generate([chat(f"q{i}") for i in range(30)], Sampling(temperature=0, n=1)))
    assert time.monotonic() - t0 < 10
    errors = [c[0].error for c in results.values()]
    assert len(errors) == 30 and all(errors)
    assert any("cannot connect" in e for e in errors)
    assert sum("endpoint looks down" in e for e in errors) > 20, "later samples must be skipped, not retried"


# ----------------------------------------------------------------------------- gguf


def test_gguf_backend_answers_like_the_transformers_model(stopping_model, tmp_path):
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (pip install 'bbjtune[export]')"
    )
    from bbjtune.export.gguf import write_gguf
    from bbjtune.models.chat_template import render_chatml

    gguf_path = write_gguf(stopping_model, tmp_path / "stopper.f32.gguf", "f32")
    backend = make_backend("gguf", model=str(gguf_path), n_ctx=512)
    try:
        as_text = render_chatml(CONVERSATION[:1], add_generation_prompt=True)
        out = dict(
            backend.generate(
                [chat("Say hi in BBj"), Request(text=as_text)], Sampling(temperature=0, max_new_tokens=40)
            )
        )
        assert out[0][0].text == 'print "hi"' and out[0][0].finish_reason == "stop"
        assert out[1][0].text == 'print "hi"'
        assert backend.describe()["gguf"] == str(gguf_path)

    finally:
        backend.close()
    with pytest.raises(BbjtuneError, match="not a GGUF"):
        bogus = Path(tmp_path / "x.gguf")
        bogus.write_bytes(b"nope")
        make_backend("gguf", model=str(bogus))


def test_gguf_backend_applies_the_repeat_penalty_like_transformers(tiny_model_dir, tmp_path):
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (pip install 'bbjtune[export]')"
    )
    from bbjtune.export.gguf import write_gguf
    from bbjtune.models import load_model, load_tokenizer

    gguf_path = write_gguf(tiny_model_dir, tmp_path / "tiny.f32.gguf", "f32")
    backend = make_backend("gguf", model=str(gguf_path), n_ctx=512)
    model, tok = load_model(str(tiny_model_dir), dtype="float32"), load_tokenizer(str(tiny_model_dir))
    hf = TransformersBackend(model, tok, batch_size=1)
    requests = [Request(text="sort an array of names"), Request(text="x")]
    try:
        texts = {}
        for penalty in (1.0, 1.5):
            sampling = Sampling(temperature=0, max_new_tokens=12, repeat_penalty=penalty, repeat_last_n=8)
            texts[penalty] = [dict(b.generate(requests, sampling)) for b in (backend, hf)]
    finally:
        backend.close()
    for penalty, (cpp, ref) in texts.items():
        assert [cpp[i][0].text for i in cpp] == [ref[i][0].text for i in ref], penalty
    plain, penalised = texts[1.0][0], texts[1.5][0]
    assert [plain[i][0].text for i in plain] != [penalised[i][0].text for i in penalised]


class OneSlotOpenAI(FakeOpenAI):
    """Answers one request at a time in 0.4 s, as llama.cpp's server with one slot does."""

    def do_POST(self):
        time.sleep(0.4)
        super().do_POST()


def test_requests_queued_at_a_one_slot_server_are_not_timed_out_and_sent_again():
    # eval gives each http request request_timeout_s x concurrency: 3 requests in flight at a server that
    # answers one at a time in 0.4 s wait up to 1.2 s. With the bare 0.5 s, the queued ones timed out and
    # were sent again while the server still worked on them (34 requests for 15 prompts, measured).
    from http.server import HTTPServer

    from bbjtune.config import EvalConfig

    class Quiet(HTTPServer):  # not threading: one request at a time
        def handle_error(self, request, client_address):  # a client that gave up: a broken pipe
            pass

    server = Quiet(("127.0.0.1", 0), OneSlotOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        ecfg = EvalConfig(request_timeout_s=0.5, concurrency=3)
        assert ecfg.http_wait_s == 1.5
        requests, sampling = [chat(p) for p in ("a", "b", "c")], Sampling(max_new_tokens=8)
        FakeOpenAI.calls = []
        bare = HttpBackend(url, "m", timeout_s=ecfg.request_timeout_s, retries=0, concurrency=3)
        errors = [c[0].error for _, c in bare.generate(requests, sampling)]
        assert any(e and "within 0.5 s" in e for e in errors)
        time.sleep(1.5)  # the server still answers the abandoned requests, one by one
        FakeOpenAI.calls = []
        queued = HttpBackend(url, "m", timeout_s=ecfg.http_wait_s, retries=0, concurrency=3)
        answers = dict(queued.generate(requests, sampling))
        assert all(c[0].error is None for c in answers.values()) and len(FakeOpenAI.calls) == 3
    finally:
        server.shutdown()
        server.server_close()
