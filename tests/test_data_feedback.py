"""`bbjtune data feedback`: the gateway's log round-trips into SFT conversations and preference pairs."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import REPO_ROOT, run_cli
from gateway_helpers import BAD_BBJ, GOOD_BBJ, ReplayUpstream, serving

from bbjtune.config import DataConfig
from bbjtune.data import feedback
from bbjtune.data.chatml import Example, iter_chatml
from bbjtune.serve.gateway.app import GatewaySettings, create_app
from bbjtune.gateway_log import Exchange, ExchangeLog, read_log

FIXED_BBJ = 'Fixed:\n```bbj\nfor i=1 to 10\n  print "a"\nnext i\nend\n```\n'
EVAL_PROMPT = json.loads((REPO_ROOT / "evals" / "bbj-core.jsonl").open().readline())["prompt"]


def _ask(text: str) -> dict:
    return {
        "model": "m",
        "messages": [{"role": "system", "content": "You write BBj."}, {"role": "user", "content": text}],
    }


def _row(
    log: ExchangeLog,
    request: dict,
    answer: str,
    verdict: str = "pass",
    *,
    rating=None,
    correction=None,
    rejected=(),
    endpoint: str = "chat",
) -> str:
    ex_id = log.add(
        Exchange(
            endpoint,
            "bbj-7b",
            request,
            answer,
            verdict,
            "builtin",
            [],
            1 + len(rejected),
            list(rejected),
            10.0,
            8.0,
            1.0,
        )
    )
    if rating is not None or correction is not None:
        log.rate(ex_id, rating, correction)
    return ex_id


@pytest.fixture
def log_rows(tmp_path):
    log = ExchangeLog(tmp_path / "log.sqlite")
    ids = {
        "accepted": _row(log, _ask("Write a loop printing 1 to 10"), GOOD_BBJ, rating=1),
        "duplicate": _row(log, _ask("Write a loop printing 1 to 10"), GOOD_BBJ, rating=1),
        "corrected": _row(log, _ask("Print a ten times"), BAD_BBJ, "fail", rating=-1, correction=FIXED_BBJ),
        "down": _row(log, _ask("Open a file"), BAD_BBJ, "fail", rating=-1),
        "unrated": _row(log, _ask("Open a channel"), GOOD_BBJ),
        "secret": _row(
            log,
            _ask("Connect to our server at 10.20.30.40"),
            '```bbj\npassword$ = "Hunter2Secret"\nprint password$\nend\n```\n',
            rating=1,
        ),
        "bad_accepted": _row(log, _ask("Print a"), BAD_BBJ, "fail", rating=1),
        "bad_correction": _row(log, _ask("Print b"), BAD_BBJ, "fail", rating=-1, correction=BAD_BBJ + " "),
        "eval": _row(log, _ask(EVAL_PROMPT), GOOD_BBJ, rating=1),
        "fim": _row(log, {"model": "m", "prompt": "a=1\n"}, "b=2", endpoint="completion", rating=1),
        "best_of": _row(
            log,
            _ask("Loop over ten numbers"),
            GOOD_BBJ,
            rejected=[{"answer": BAD_BBJ, "verdict": "fail", "reason": "line 2", "diagnostics": []}],
        ),
        "images": _row(
            log,
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}
                ],
            },
            GOOD_BBJ,
            rating=1,
        ),
    }
    log.close()
    return tmp_path / "log.sqlite", ids


def test_log_becomes_sft_and_preference_data_cleaned_like_other_data(log_rows):
    path, ids = log_rows
    result = feedback.build(
        read_log(path),
        DataConfig(),
        compiler="builtin",
        eval_items=[("eval bbj-core:file-io-001", EVAL_PROMPT)],
        checker_pairs=True,
    )
    by_exchange = {r["exchange"]: r for r in result.sft}
    assert set(by_exchange) == {ids["accepted"], ids["corrected"], ids["secret"]}
    assert by_exchange[ids["accepted"]]["kind"] == "accepted"
    assert by_exchange[ids["corrected"]]["messages"][-1]["content"] == FIXED_BBJ
    secret = by_exchange[ids["secret"]]["messages"]
    assert "Hunter2Secret" not in json.dumps(secret) and "10.20.30.40" not in json.dumps(secret)
    assert result.scrubbed["password"] == 1 and result.scrubbed["ip"] == 1
    reasons = {r["exchange"]: r["reason"] for r in result.rejected}
    assert reasons == {
        ids["bad_accepted"]: "accepted-fails-checker",
        ids["bad_correction"]: "corrected-fails-checker",
        ids["eval"]: "overlaps-eval",
        ids["images"]: "unusable-request",
    }
    assert result.skipped == {
        "duplicate": 1,
        "rated down, no correction": 1,
        "not rated": 1,
        "fill-in-the-middle": 1,
    }
    pairs = {p["source"]: p for p in result.pairs}
    assert len(result.pairs) == 2
    assert pairs["corrected"]["chosen"] == [{"role": "assistant", "content": FIXED_BBJ}]
    assert pairs["corrected"]["rejected"] == [{"role": "assistant", "content": BAD_BBJ}]
    assert pairs["corrected"]["prompt"][-1] == {"role": "user", "content": "Print a ten times"}
    assert (
        pairs["checker"]["exchange"] == ids["best_of"]
        and pairs["checker"]["chosen"][0]["content"] == GOOD_BBJ
    )
    # without --checker-pairs only the developer's corrections make pairs
    plain = feedback.build(read_log(path), DataConfig(), compiler="builtin", eval_items=[])
    assert [p["source"] for p in plain.pairs] == ["corrected"]


def test_outputs_load_as_chatml_and_as_trl_preference_data(log_rows, tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    path, _ids = log_rows
    res = run_cli("data", "feedback", str(path), "--compiler", "builtin")
    assert res.returncode == 0, res.stderr
    assert "3 SFT conversations (2 accepted, 1 corrected), 1 preference pairs" in " ".join(res.stderr.split())
    out = path.parent / "feedback"
    items = list(iter_chatml(out / "sft.jsonl"))
    assert len(items) == 3 and all(
        isinstance(i, Example) for i in items
    )  # data prepare reads them as they are
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rejected"]["overlaps-eval"] == 1 and summary["checked_against_prompts"] >= 176
    pair = json.loads((out / "preference.jsonl").read_text().splitlines()[0])
    assert is_conversational(pair)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rendered = maybe_apply_chat_template({k: pair[k] for k in ("prompt", "chosen", "rejected")}, tok)
    assert rendered["prompt"].rstrip().endswith("<|im_start|>assistant")
    assert "Fixed:" in rendered["chosen"] and 'print ("a"' in rendered["rejected"]


def test_gateway_exchange_rated_over_http_round_trips(tmp_path):
    upstream = ReplayUpstream([BAD_BBJ])
    log = ExchangeLog(tmp_path / "gw.sqlite")
    with (
        serving(upstream.app) as up,
        serving(create_app(GatewaySettings(f"{up}/v1", compiler="builtin"), log)) as gw,
    ):
        reply = httpx.post(f"{gw}/v1/chat/completions", json=_ask("Print a, ten times")).json()
        ex_id = reply["bbjtune"]["id"]
        httpx.post(f"{gw}/v1/feedback", json={"id": ex_id, "rating": "down", "correction": FIXED_BBJ})
    result = feedback.build(read_log(tmp_path / "gw.sqlite"), DataConfig(), compiler="builtin", eval_items=[])
    assert [r["exchange"] for r in result.sft] == [ex_id] and len(result.pairs) == 1
    assert result.pairs[0]["rejected"][0]["content"] == BAD_BBJ
