"""The checking gateway over real HTTP, in front of a replaying upstream (see gateway_helpers.py).

Best-of-N needs a model that writes BBj, sometimes right and sometimes wrong; the replaying upstream
plays such answers in a fixed order, so each test knows which attempt should win.
"""

from __future__ import annotations

import re

import httpx
import pytest
from conftest import run_cli
from gateway_helpers import BAD_BBJ, GOOD_BBJ, PROSE, WORSE_BBJ, ReplayUpstream, serving

from bbjtune.serve.gateway.app import GatewaySettings, create_app
from bbjtune.serve.gateway.page import MAX_FORM_BYTES
from bbjtune.gateway_log import ExchangeLog, read_log

openai = pytest.importorskip("openai")
ASK = [{"role": "user", "content": "Write a BBj loop printing 1 to 10"}]


@pytest.fixture
def gateway(tmp_path):
    """gateway(answers, **settings) -> (base url, upstream, log): a gateway in front of a replaying upstream."""
    stack = []

    def start(
        answers, *, log=True, token=None, allowed_hosts=None, max_chars=None, down_after=None, **settings
    ):
        upstream = ReplayUpstream(answers, max_chars=max_chars, down_after=down_after)
        up_ctx = serving(upstream.app)
        up_url = up_ctx.__enter__()
        stack.append(up_ctx)
        store = ExchangeLog(tmp_path / "log.sqlite") if log else None
        app = create_app(
            GatewaySettings(upstream=f"{up_url}/v1", compiler="builtin", **settings),
            store,
            token=token,
            allowed_hosts=allowed_hosts,
        )
        gw_ctx = serving(app)
        url = gw_ctx.__enter__()
        stack.append(gw_ctx)
        return url, upstream, store

    yield start
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def test_best_of_n_returns_the_first_answer_that_passes(gateway):
    url, upstream, log = gateway([BAD_BBJ, BAD_BBJ, GOOD_BBJ, BAD_BBJ], best_of=4)
    raw = client(url).chat.completions.with_raw_response.create(model="m", messages=ASK, temperature=0)
    reply = raw.parse()
    assert reply.choices[0].message.content == GOOD_BBJ
    extra = reply.model_extra["bbjtune"]
    assert extra["verdict"] == "pass" and extra["attempts"] == 3 and extra["compiler"] == "builtin"
    assert raw.headers["x-bbjtune-exchange"] == extra["id"]
    # greedy first, then sampled: a greedy retry would repeat the failing answer
    assert [r["temperature"] for r in upstream.requests] == [0, 0.7, 0.7]
    row = log.get(extra["id"])
    assert row["answer"] == GOOD_BBJ and row["attempts"] == 3 and row["verdict"] == "pass"
    assert [r["verdict"] for r in row["rejected"]] == ["fail", "fail"]
    assert "malformed option list" in row["rejected"][0]["reason"]
    assert row["model"] == "bbj-replay" and row["latency_ms"] >= row["upstream_ms"] > 0


def test_when_nothing_passes_the_answer_with_fewest_errors_comes_back_with_diagnostics(gateway):
    url, _upstream, _log = gateway([WORSE_BBJ, BAD_BBJ], best_of=2)
    reply = client(url).chat.completions.create(model="m", messages=ASK)
    extra = reply.model_extra["bbjtune"]
    assert reply.choices[0].message.content == BAD_BBJ
    assert extra["verdict"] == "fail" and extra["attempts"] == 2
    assert extra["diagnostics"][0]["line"] == 2 and "line 2" in extra["reason"]  # lines of the code block


# compiles, but asks BBjAPI for a method it does not have: tier 2 fails it
INVENTED_BBJ = 'Here it is:\n```bbj\napi! = BBjAPI()\napp! = api!.openApp("orders")\nprint "ok"\nend\n```\n'


def test_an_answer_that_compiles_but_calls_an_invented_method_is_asked_again(gateway):
    url, upstream, log = gateway([INVENTED_BBJ, GOOD_BBJ], best_of=3)
    reply = client(url).chat.completions.create(model="m", messages=ASK, temperature=0)
    extra = reply.model_extra["bbjtune"]
    assert reply.choices[0].message.content == GOOD_BBJ and extra["attempts"] == 2
    row = log.get(extra["id"])
    assert [r["verdict"] for r in row["rejected"]] == ["fail"]
    assert "tier 2" in row["rejected"][0]["reason"] and "openApp" in row["rejected"][0]["reason"]
    assert row["rejected"][0]["diagnostics"][0]["code"] == "unknown-method"
    # --checks compile: the checker alone, the first answer stands
    url, upstream, _ = gateway([INVENTED_BBJ, GOOD_BBJ], best_of=3, checks="compile")
    reply = client(url).chat.completions.create(model="m", messages=ASK, temperature=0)
    assert reply.choices[0].message.content == INVENTED_BBJ and len(upstream.requests) == 1
    assert reply.model_extra["bbjtune"]["verdict"] == "pass"


# compiles and calls only real methods, but opens a BBjAPI window where Visual PRO/5 was asked for
SYSGUI_BBJ = '```bbj\nsysgui! = BBjAPI().openSysGui("X0")\nwin! = sysgui!.addWindow(10, 10, 200, 100, "Hi")\nend\n```\n'
MNEMONIC_BBJ = '```bbj\nsysgui = unt\nopen (sysgui) "X0"\nprint (sysgui) \'window\'(10, 10, 200, 100, "Hi", $$)\nend\n```\n'


def test_code_of_the_other_generation_than_the_question_names_is_asked_again(gateway):
    vpro5 = [{"role": "user", "content": "In Visual PRO/5, open a window titled Hi."}]
    url, upstream, log = gateway([SYSGUI_BBJ, MNEMONIC_BBJ], best_of=2)
    reply = client(url).chat.completions.create(model="m", messages=vpro5, temperature=0)
    assert reply.choices[0].message.content == MNEMONIC_BBJ
    rejected = log.get(reply.model_extra["bbjtune"]["id"])["rejected"]
    assert (
        rejected[0]["diagnostics"][0]["code"] == "generation-mismatch"
        and "Visual PRO/5" in rejected[0]["reason"]
    )
    # a question that names no generation: the BBjAPI window stands
    url, upstream, _ = gateway([SYSGUI_BBJ, MNEMONIC_BBJ], best_of=2)
    reply = client(url).chat.completions.create(model="m", messages=ASK, temperature=0)
    assert reply.choices[0].message.content == SYSGUI_BBJ and len(upstream.requests) == 1


def test_when_nothing_passes_an_answer_that_compiles_is_preferred(gateway):
    # BAD_BBJ has one checker error; INVENTED_BBJ compiles with one tier 2 finding: it is the better answer
    url, _upstream, _log = gateway([BAD_BBJ, INVENTED_BBJ], best_of=2)
    reply = client(url).chat.completions.create(model="m", messages=ASK)
    extra = reply.model_extra["bbjtune"]
    assert reply.choices[0].message.content == INVENTED_BBJ
    assert extra["verdict"] == "fail" and extra["reason"].startswith("tier 2, line 2:")


def test_a_retry_without_code_does_not_replace_code_that_failed(gateway):
    # drawn again after failing code, a prose answer answers nothing: the next draw is taken
    url, upstream, _ = gateway([BAD_BBJ, PROSE, GOOD_BBJ], best_of=3)
    reply = client(url).chat.completions.create(model="m", messages=ASK, temperature=0)
    assert reply.choices[0].message.content == GOOD_BBJ and reply.model_extra["bbjtune"]["attempts"] == 3
    # and when nothing better comes, the failing code is returned with its diagnostics
    url, upstream, _ = gateway([BAD_BBJ, PROSE], best_of=2)
    reply = client(url).chat.completions.create(model="m", messages=ASK, temperature=0)
    assert reply.choices[0].message.content == BAD_BBJ
    assert reply.model_extra["bbjtune"]["verdict"] == "fail" and len(upstream.requests) == 2


def test_repair_sends_the_failing_answer_back_with_what_the_checker_found(gateway):
    url, upstream, log = gateway([BAD_BBJ, GOOD_BBJ], best_of=3, retry="repair")
    reply = client(url).chat.completions.create(model="m", messages=ASK, temperature=0)
    extra = reply.model_extra["bbjtune"]
    assert reply.choices[0].message.content == GOOD_BBJ and extra["attempts"] == 2 and extra["repaired"]
    first, second = upstream.requests
    assert first["messages"] == ASK
    assert second["messages"][:2] == [*ASK, {"role": "assistant", "content": BAD_BBJ}]
    ask = second["messages"][2]
    assert ask["role"] == "user" and "does not compile" in ask["content"]
    # the line as the model wrote it, with the checker's message: a small model cannot count lines
    assert 'line 2 `print ("a"`: malformed option list' in ask["content"]
    assert second["temperature"] == 0  # a new conversation: greedy stays greedy
    row = log.get(extra["id"])
    assert row["answer"] == GOOD_BBJ and [r["verdict"] for r in row["rejected"]] == ["fail"]


def test_repair_names_the_tier_2_finding_and_sends_each_answer_back_once(gateway):
    # the repair returns the same code: it is not sent back again, the third answer is a new draw
    url, upstream, log = gateway([INVENTED_BBJ, INVENTED_BBJ, GOOD_BBJ], best_of=3, retry="repair")
    reply = client(url).chat.completions.create(model="m", messages=ASK, temperature=0)
    assert reply.choices[0].message.content == GOOD_BBJ
    assert "repaired" not in reply.model_extra["bbjtune"]
    first, second, third = upstream.requests
    ask = second["messages"][-1]["content"]
    assert "compiles, but has these problems" in ask and "openApp" in ask
    # what BBjAPI has instead, by the same verb, with argument counts
    assert "instead of BBjAPI.openApp(): BBjAPI has openSysGui(" in ask
    assert third["messages"] == ASK and third["temperature"] == 0.7
    rejected = log.get(reply.model_extra["bbjtune"]["id"])["rejected"]
    assert [r.get("repair_of") for r in rejected] == [None, 1]  # the second answer corrected the first


def test_repair_past_the_upstream_context_draws_afresh_and_completions_resample(gateway):
    # the upstream refuses the longer conversation (400, as a full context): a new draw instead
    url, upstream, _ = gateway([BAD_BBJ, GOOD_BBJ], best_of=2, retry="repair", max_chars=len(BAD_BBJ) + 50)
    reply = client(url).chat.completions.create(model="m", messages=ASK, temperature=0)
    assert reply.choices[0].message.content == GOOD_BBJ
    assert [r["messages"] for r in upstream.requests] == [ASK, ASK]
    assert upstream.requests[1]["temperature"] == 0.7
    # a completion has no conversation to extend: it is drawn again
    url, upstream, _ = gateway([' print ("a"\n', " print i\n"], best_of=2, retry="repair")
    prompt = "<|fim_prefix|>for i=1 to 3\n<|fim_suffix|>next i\nend\n<|fim_middle|>"
    client(url).completions.create(model="m", prompt=prompt, temperature=0)
    assert [r["prompt"] for r in upstream.requests] == [prompt, prompt]


RUNAWAY = "Here is the loop:\n```bbj\nfor i=1 to 10\n  print i\nnext i\n" + "print i\n" * 60 + "pri"


def test_an_answer_that_ran_on_in_a_loop_comes_back_cut_where_the_loop_starts(gateway, tmp_path):
    url, upstream, log = gateway([(RUNAWAY, "length"), GOOD_BBJ], best_of=2)
    reply = client(url).chat.completions.create(model="m", messages=ASK, temperature=0)
    cut = "Here is the loop:\n```bbj\nfor i=1 to 10\n  print i\nnext i\nprint i\n```"
    assert reply.choices[0].message.content == cut and reply.choices[0].finish_reason == "stop"
    extra = reply.model_extra["bbjtune"]
    assert extra["verdict"] == "pass" and extra["loop_cut"] is True and extra["attempts"] == 1
    assert len(upstream.requests) == 1  # the cut answer passed: no retry
    row = log.get(extra["id"])
    assert row["answer"] == cut
    assert [(r["verdict"], r["answer"]) for r in row["rejected"]] == [("loop", RUNAWAY)]
    # an answer that stopped by itself is never cut, however it repeats
    url, upstream, _ = gateway([RUNAWAY], best_of=1)
    reply = client(url).chat.completions.create(model="m", messages=ASK)
    assert reply.choices[0].message.content == RUNAWAY and "loop_cut" not in reply.model_extra["bbjtune"]
    # `data feedback --checker-pairs` turns the loop into a pair: the runaway against the cut answer
    from bbjtune.config import DataConfig
    from bbjtune.data import feedback

    rows = read_log(tmp_path / "log.sqlite")
    result = feedback.build(rows, DataConfig(), compiler="builtin", eval_items=[], checker_pairs=True)
    assert [(p["source"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in result.pairs] == [
        ("loop", cut, RUNAWAY)
    ]


def test_a_retry_the_upstream_cannot_answer_keeps_the_answer_already_drawn(gateway):
    # the model server goes down after the first answer: the client gets that answer, not an error
    for retry in ("resample", "repair"):
        url, upstream, _ = gateway([BAD_BBJ, GOOD_BBJ], best_of=3, retry=retry, down_after=1)
        reply = client(url).chat.completions.create(model="m", messages=ASK, temperature=0)
        assert reply.choices[0].message.content == BAD_BBJ and len(upstream.requests) == 1
        assert (
            reply.model_extra["bbjtune"]["verdict"] == "fail"
            and reply.model_extra["bbjtune"]["attempts"] == 1
        )
    # down from the start: the upstream's error, as before
    url, _, _ = gateway([GOOD_BBJ], best_of=3, down_after=0)
    with pytest.raises(openai.InternalServerError):
        client(url).chat.completions.create(model="m", messages=ASK)


def test_an_evaluation_through_the_gateway_records_how_each_answer_was_got(gateway):
    from bbjtune.evaluate.run import gateway_summary
    from bbjtune.models.generate_http import HttpBackend
    from bbjtune.models.generations import make_row
    from bbjtune.models.requests import Request, Sampling

    url, _upstream, _ = gateway([BAD_BBJ, GOOD_BBJ], best_of=3, retry="repair")
    backend = HttpBackend(f"{url}/v1", model="m")
    request = Request(messages=ASK, meta={"id": "loop", "suite": "s"})
    (_, [completion]) = next(iter(backend.generate([request], Sampling(temperature=0.0))))
    assert completion.text == GOOD_BBJ
    assert completion.gateway == {"verdict": "pass", "attempts": 2, "repaired": True}
    row = make_row(request, 0, completion, "gw", "")
    assert row["gateway"] == completion.gateway
    summary = gateway_summary([row, {**row, "gateway": {"verdict": "pass", "attempts": 1}}, {"id": "x"}])
    assert summary == {
        "requests": 2,
        "answers_drawn": 3,
        "requests_by_answers_drawn": {"1": 1, "2": 1},
        "repaired": 1,
        "loop_cut": 0,
        "verdicts": {"pass": 2},
    }
    assert gateway_summary([{"id": "x"}]) is None  # not through a gateway: no such section


def test_eval_through_the_gateway_reports_the_answers_it_drew(gateway, tmp_path):
    import json

    from conftest import REPO_ROOT

    url, upstream, _ = gateway([BAD_BBJ, GOOD_BBJ], best_of=3)
    res = run_cli(
        "eval", "run", "--model", "m", "--backend", "http", "--base-url", f"{url}/v1",
        "--suite", str(REPO_ROOT / "evals" / "bbj-core.jsonl"), "--limit", "1", "--no-humaneval",
        "--compiler", "builtin", "--label", "gw", "--out", str(tmp_path),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    results = json.loads((tmp_path / "gw" / "results.json").read_text())
    assert results["gateway"]["requests"] == 1 and results["gateway"]["answers_drawn"] == 2
    assert "2 answers drawn for 1 requests" in (tmp_path / "gw" / "report.html").read_text()
    assert len(upstream.requests) == 2


def test_answers_without_bbj_are_not_retried(gateway):
    url, upstream, _ = gateway([PROSE, GOOD_BBJ], best_of=3)
    reply = client(url).chat.completions.create(model="m", messages=[{"role": "user", "content": "Capital?"}])
    assert reply.choices[0].message.content == PROSE
    assert reply.model_extra["bbjtune"]["verdict"] == "no-code" and len(upstream.requests) == 1


def test_streaming_passes_tokens_through_and_ends_with_the_verdict(gateway):
    url, upstream, log = gateway([BAD_BBJ])
    chunks = list(client(url).chat.completions.create(model="m", messages=ASK, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == BAD_BBJ
    assert len(chunks) > 5  # passed on piece by piece, not collected first
    extra = chunks[-1].model_extra["bbjtune"]
    assert extra["verdict"] == "fail" and extra["attempts"] == 1
    assert upstream.requests[0]["stream"] is True
    assert log.get(extra["id"])["answer"] == BAD_BBJ


def test_streaming_with_best_of_sends_the_passing_answer(gateway):
    url, _upstream, _ = gateway([BAD_BBJ, GOOD_BBJ], best_of=3)
    chunks = list(client(url).chat.completions.create(model="m", messages=ASK, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == GOOD_BBJ
    assert chunks[-1].model_extra["bbjtune"]["attempts"] == 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_comment_mode_appends_the_verdict_to_chat_answers_but_logs_the_answer(gateway):
    url, _, log = gateway([BAD_BBJ], diagnostics="comment")
    reply = client(url).chat.completions.create(model="m", messages=ASK)
    content = reply.choices[0].message.content
    assert content.startswith(BAD_BBJ)
    assert "> BBj check (builtin): the code does not pass." in content and "> - line 2: malformed" in content
    assert log.get(reply.model_extra["bbjtune"]["id"])["answer"] == BAD_BBJ
    streamed = list(client(url).chat.completions.create(model="m", messages=ASK, stream=True))
    assert "does not pass" in "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)


def test_fim_completion_is_checked_within_its_file(gateway):
    # the file already has an error above the cursor; only errors the completion adds count
    prompt = "<|fim_prefix|>x=(\na=1\nb=2\n<|fim_suffix|>\nprint c\nend\n<|fim_middle|>"
    url, _upstream, log = gateway(["c=(a+b", "c=a+b"], best_of=2, diagnostics="comment")
    reply = client(url).completions.create(model="m", prompt=prompt, max_tokens=16)
    assert reply.choices[0].text == "c=a+b"  # no comment in text an editor inserts into code
    extra = reply.model_extra["bbjtune"]
    assert extra["verdict"] == "pass" and extra["attempts"] == 2
    assert "adds 1 error" in log.get(extra["id"])["rejected"][0]["reason"]
    # the same with prompt + suffix fields, streamed
    url2, _, _ = gateway(["c=(a+b"])
    chunks = list(
        client(url2).completions.create(
            model="m", prompt="a=1\nb=2\n", suffix="\nprint c\nend\n", stream=True, max_tokens=16
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "c=(a+b"
    assert chunks[-1].model_extra["bbjtune"]["verdict"] == "fail"


def test_rating_endpoint_stores_rating_and_correction(gateway):
    url, _, log = gateway([BAD_BBJ])
    ex_id = client(url).chat.completions.create(model="m", messages=ASK).model_extra["bbjtune"]["id"]
    res = httpx.post(f"{url}/v1/feedback", json={"id": ex_id, "rating": "down", "correction": GOOD_BBJ})
    assert res.status_code == 200 and res.json() == {"id": ex_id, "rating": -1, "corrected": True}
    assert httpx.post(f"{url}/v1/feedback", json={"id": ex_id, "rating": "up"}).json()["rating"] == 1
    row = log.get(ex_id)
    assert row["rating"] == 1 and row["correction"] == GOOD_BBJ  # a later rating keeps the correction
    assert httpx.post(f"{url}/v1/feedback", json={"id": "ex-nope", "rating": "up"}).status_code == 404
    assert httpx.post(f"{url}/v1/feedback", json={"id": ex_id, "rating": "meh"}).status_code == 400
    for other in (True, 2, [1], {"up": 1}):  # a list or object once crashed the lookup (500)
        assert httpx.post(f"{url}/v1/feedback", json={"id": ex_id, "rating": other}).status_code == 400
    assert httpx.post(f"{url}/v1/feedback", json={"id": ex_id, "rating": -1}).json()["rating"] == -1
    assert httpx.post(f"{url}/v1/feedback", json={"id": ex_id, "rating": "UP"}).json()["rating"] == 1
    assert httpx.post(f"{url}/v1/feedback", json={"id": ex_id}).status_code == 400


def test_rating_page_shows_answers_escaped_and_needs_its_csrf_token(gateway):
    url, _, log = gateway(['```bbj\nprint "<script>x</script>"\nend\n```'])
    ex_id = client(url).chat.completions.create(model="m", messages=ASK).model_extra["bbjtune"]["id"]
    page = httpx.get(f"{url}/feedback")
    assert page.status_code == 200 and ex_id in page.text
    assert "<script>x" not in page.text and "&lt;script&gt;x" in page.text
    csrf = re.search(r"name='csrf' value='([^']+)'", page.text).group(1)
    form = {"csrf": csrf, "rating": "down", "correction": "print 1\r\nend\r\n"}
    assert httpx.post(f"{url}/feedback/{ex_id}", data={**form, "csrf": "forged"}).status_code == 403
    assert (
        httpx.post(
            f"{url}/feedback/{ex_id}", data=form, headers={"Origin": "http://evil.example"}
        ).status_code
        == 403
    )
    assert log.get(ex_id)["rating"] is None
    res = httpx.post(f"{url}/feedback/{ex_id}", data=form, headers={"Origin": url})
    assert res.status_code == 303
    row = log.get(ex_id)
    assert row["rating"] == -1 and row["correction"] == "print 1\nend\n"


def test_requests_browsers_could_forge_oversized_ones_and_n_are_refused(gateway):
    url, upstream, log = gateway([GOOD_BBJ], max_body_bytes=2000)
    assert (
        httpx.post(
            f"{url}/v1/chat/completions", content='{"messages": []}', headers={"Content-Type": "text/plain"}
        ).status_code
        == 415
    )
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
    res = httpx.post(f"{url}/v1/chat/completions", json=big)
    assert res.status_code == 413 and "2,000 bytes" in res.json()["error"]["message"]

    def chunked():  # no Content-Length: the limit holds as the bytes arrive
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        yield from (b"x" * 500 for _ in range(10))
        yield b'"}]}'

    res = httpx.post(
        f"{url}/v1/chat/completions", content=chunked(), headers={"Content-Type": "application/json"}
    )
    assert res.status_code == 413 and "2,000 bytes" in res.json()["error"]["message"]
    form = {"rating": "up", "correction": "x" * (MAX_FORM_BYTES + 1)}  # the rating page's own limit
    assert httpx.post(f"{url}/feedback/ex-any", data=form).status_code == 413
    assert (
        httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": ASK, "n": 2}).status_code
        == 400
    )
    assert httpx.post(f"{url}/v1/chat/completions", json={"model": "m"}).status_code == 400
    assert httpx.post(f"{url}/v1/completions", json={"model": "m", "prompt": ["a", "b"]}).status_code == 400
    assert upstream.requests == [] and log.recent() == []


def test_token_off_loopback_is_required_and_never_passed_upstream(gateway):
    token = "s3cret-token-for-the-gateway"
    url, upstream, _ = gateway([GOOD_BBJ], token=token, upstream_key="upstream-key")
    with pytest.raises(openai.AuthenticationError) as info:
        client(url, key="wrong").chat.completions.create(model="m", messages=ASK)
    assert "the token `bbjtune serve gateway` printed" in info.value.response.text
    assert upstream.requests == []
    reply = client(url, key=token).chat.completions.create(model="m", messages=ASK)
    assert reply.model_extra["bbjtune"]["verdict"] == "pass"
    assert upstream.headers[0]["authorization"] == "Bearer upstream-key"
    assert [m.id for m in client(url, key=token).models.list().data] == ["bbj-replay"]


def test_host_check_on_loopback_and_a_forced_model_name(gateway):
    url, upstream, _ = gateway(
        [GOOD_BBJ], allowed_hosts=frozenset({"127.0.0.1", "localhost"}), model="bbj:7b"
    )
    assert httpx.get(f"{url}/v1/models", headers={"Host": "attacker.example"}).status_code == 400
    client(url).chat.completions.create(model="whatever-the-editor-says", messages=ASK)
    assert upstream.requests[0]["model"] == "bbj:7b"


def test_no_log_means_no_id_no_file_and_no_rating(gateway, tmp_path):
    url, _, _ = gateway([GOOD_BBJ], log=False)
    raw = client(url).chat.completions.with_raw_response.create(model="m", messages=ASK)
    assert "x-bbjtune-exchange" not in raw.headers and raw.parse().model_extra["bbjtune"]["id"] is None
    assert not (tmp_path / "log.sqlite").exists()
    assert httpx.post(f"{url}/v1/feedback", json={"id": "x", "rating": "up"}).status_code == 404


def test_unreachable_upstream_is_a_clear_502(tmp_path):
    app = create_app(GatewaySettings(upstream="http://127.0.0.1:9/v1", compiler="builtin"), None)
    with serving(app) as url, pytest.raises(openai.InternalServerError) as info:
        client(url).chat.completions.create(model="m", messages=ASK)
    assert "cannot be reached" in str(info.value)


def test_log_survives_a_restart_and_reads_back(tmp_path, gateway):
    url, _, _log = gateway([GOOD_BBJ])
    ex_id = client(url).chat.completions.create(model="m", messages=ASK).model_extra["bbjtune"]["id"]
    rows = read_log(tmp_path / "log.sqlite")
    assert [r["id"] for r in rows] == [ex_id] and rows[0]["request"]["messages"] == ASK
    (tmp_path / "junk.sqlite").write_text("not a database")
    res = run_cli("data", "feedback", str(tmp_path / "junk.sqlite"), "-o", str(tmp_path / "out"))
    assert (
        res.returncode == 2 and "not a gateway exchange log" in res.stderr and "Traceback" not in res.stderr
    )


def test_cli_refuses_bad_options_in_one_line():
    res = run_cli("serve", "gateway", "--upstream", "ftp://x", "--port", "0")
    assert res.returncode == 2 and "not an http(s) address" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("serve", "gateway", "--diagnostics", "loud", "--port", "0")
    assert res.returncode == 2 and "--diagnostics" in res.stderr
    res = run_cli("serve", "gateway", "--checks", "strict", "--port", "0")
    assert res.returncode == 2 and "--checks" in res.stderr and "clean or compile" in res.stderr
    res = run_cli("serve", "gateway", "--retry", "twice", "--port", "0")
    assert res.returncode == 2 and "--retry" in res.stderr and "resample or repair" in res.stderr


def test_cli_off_loopback_prints_a_token_and_requires_it(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bbjtune",
            "serve",
            "gateway",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--no-log",
            "--upstream",
            "http://127.0.0.1:9/v1",
        ],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        port = token = None
        for line in proc.stdout:
            if m := re.search(r"Gateway at http://0\.0\.0\.0:(\d+)/v1", line):
                port = m.group(1)
            if m := re.search(r"Access token \(the editor's API key\): (\S+)", line):
                token = m.group(1)
            if "Ctrl+C" in line:
                break
        assert port and token and len(token) >= 16
        url = f"http://127.0.0.1:{port}/v1/models"
        assert httpx.get(url, timeout=10).status_code == 401
        res = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert res.status_code == 502 and "cannot be reached" in res.json()["error"]["message"]
        assert list(tmp_path.iterdir()) == []  # --no-log: not even the default log file
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why it stopped
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
