"""The review web app through its HTTP interface: sessions, CSRF, access token, blinding, results."""

from __future__ import annotations

import csv
import json
import re
from types import SimpleNamespace

import pytest
from review_fixtures import BASE_LABEL, HOSTILE_MARK, PROMPTS, TUNED_LABEL, write_eval_runs
from starlette.testclient import TestClient

from bbjtune.review.app import create_app
from bbjtune.review.items import pair_runs
from bbjtune.review.render import render_answer
from bbjtune.review.results import export_ratings
from bbjtune.net import LOOPBACK_HOSTS
from bbjtune.review.storage import CRITERIA, ReviewStore
from bbjtune.review_summary import load_review_summary

ORIGIN = "http://127.0.0.1:8765"


@pytest.fixture
def review(tmp_path):
    base, tuned = write_eval_runs(tmp_path)
    review_dir = tmp_path / "eval" / "review"
    store = ReviewStore(review_dir / "ratings.sqlite")
    store.sync_items(pair_runs(base, tuned))
    return SimpleNamespace(store=store, dir=review_dir, base=base, tuned=tuned, root=tmp_path)


def _client(review, **options) -> TestClient:
    return TestClient(create_app(review.store, review.dir, **options), base_url=ORIGIN)


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def _login(client: TestClient, name: str = "Ann", key: str = ""):
    page = client.get("/")
    return client.post("/login", data={"name": name, "key": key, "csrf": _csrf(page.text)})


def _key(html: str) -> str:
    return re.search(r'id="reviewer-key">([a-z0-9-]+)<', html).group(1)


def _item_id(response) -> int:
    return int(re.search(r"/item/(\d+)$", str(response.url)).group(1))


def _rate(client, item_id, csrf, prefer="left", left=4, right=2, comment=""):
    data = {"csrf": csrf, "prefer": prefer, "comment": comment}
    data.update({f"left_{c}": str(left) for c in CRITERIA})
    data.update({f"right_{c}": str(right) for c in CRITERIA})
    return client.post(f"/item/{item_id}", data=data, follow_redirects=False)


def _progress(html: str) -> str:
    return re.search(r'id="progress-text">([^<]*)<', html).group(1)


def _answer_html(html: str, side: str) -> str:
    return re.search(
        rf'id="answer-{side}">.*?<div class="answer-body">(.*?)</div>\s*<fieldset', html, re.S
    ).group(1)


def _run_shown(html: str, side: str, stored) -> str:
    """Which run's answer the page shows on this side ("a" or "b"), found by its content."""
    shown = _answer_html(html, side)
    matches = [
        run
        for run, answer in (("a", stored.item.a), ("b", stored.item.b))
        if shown == str(render_answer(answer.output, answer.code).html)
    ]
    assert len(matches) == 1, "fixture answers must differ"
    return matches[0]


# ----------------------------------------------------------------------------- the flow


def test_login_rate_and_resume(review):
    client = _client(review)
    page = client.get("/")
    assert page.status_code == 200 and 'name="name"' in page.text and "8 prompts" in page.text
    first = _login(client)
    assert first.status_code == 200 and "/item/" in str(first.url)
    assert _progress(first.text) == "0 of 8 rated" and "Reviewing as" in first.text
    saved = _rate(client, _item_id(first), _csrf(first.text))
    assert saved.status_code == 303 and saved.headers["location"].startswith("/item/")
    second = client.get(saved.headers["location"])
    assert _progress(second.text) == "1 of 8 rated" and _item_id(second) != _item_id(first)

    # A new browser, same name and the reviewer's key: the progress is there and /next skips the rated prompt.
    other = _client(review)
    again = _login(other, "  ann ", _key(first.text))
    assert _progress(again.text) == "1 of 8 rated"
    assert _item_id(again) == _item_id(second)
    # Reopening a rated prompt shows the stored choices.
    shown = other.get(f"/item/{_item_id(first)}")
    assert re.search(r'name="prefer" value="left" checked', shown.text)
    assert re.search(r'name="left_correctness" value="4" checked', shown.text)


def test_rating_every_prompt_ends_on_the_done_page(review):
    client = _client(review)
    page = _login(client)
    for _ in range(len(PROMPTS)):
        response = _rate(client, _item_id(page), _csrf(page.text), prefer="tie")
        page = client.get(response.headers["location"])
    assert str(page.url).endswith("/done") and "8 of 8" in page.text
    assert client.get("/next", follow_redirects=False).headers["location"] == "/done"


def test_invalid_rating_is_refused_with_the_form_kept(review):
    client = _client(review)
    page = _login(client)
    data = {"csrf": _csrf(page.text), "comment": "</textarea><script>alert(2)</script>"}
    response = client.post(f"/item/{_item_id(page)}", data=data)
    assert response.status_code == 400 and "Choose which answer is better" in response.text
    assert (
        "&lt;/textarea&gt;&lt;script&gt;alert(2)" in response.text and "<script>alert(2)" not in response.text
    )
    data.update(
        prefer="left", **{f"left_{c}": "4" for c in CRITERIA}, **{f"right_{c}": "9" for c in CRITERIA}
    )
    response = client.post(f"/item/{_item_id(page)}", data=data)
    assert response.status_code == 400 and "right answer (1 to 5)" in response.text
    assert review.store.rating_records() == []


def test_unknown_prompt_and_anonymous_visits(review):
    client = _client(review)
    assert client.get("/item/1", follow_redirects=False).headers["location"] == "/"
    assert client.get("/next", follow_redirects=False).headers["location"] == "/"
    _login(client)
    assert client.get("/item/9999").status_code == 404
    assert client.get("/static/review.css").status_code == 200


def test_name_is_required(review):
    client = _client(review)
    response = client.post("/login", data={"name": "   ", "csrf": _csrf(client.get("/").text)})
    assert response.status_code == 400 and "enter your name" in response.text


# ----------------------------------------------------------------------------- CSRF and cookies


def test_posts_without_a_valid_csrf_token_are_refused(review):
    client = _client(review)
    page = _login(client)
    item = _item_id(page)
    good = _csrf(page.text)
    assert _rate(client, item, "").status_code == 403
    assert _rate(client, item, "0" * 32).status_code == 403
    no_field = client.post(f"/item/{item}", data={"prefer": "left"})
    assert no_field.status_code == 403
    assert client.post("/login", data={"name": "Mallory"}).status_code == 403
    assert client.post("/logout", data={}).status_code == 403
    # The right token from another site's page is refused too.
    cross = client.post(
        f"/item/{item}", data={"csrf": good, "prefer": "left"}, headers={"Origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    cross = client.post(
        f"/item/{item}", data={"csrf": good, "prefer": "left"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status_code == 403
    # A browser without the session cookie cannot use someone else's token.
    stranger = _client(review)
    assert _rate(stranger, item, good).status_code == 403
    assert review.store.rating_records() == []
    assert _rate(client, item, good).status_code == 303


def test_session_cookie_flags_and_forgery(review):
    client = _client(review)
    response = client.get("/")
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("samesite", "SameSite")
    _login(client)
    value = client.cookies["bbjtune_session"]
    session_id, reviewer, mac = value.split(".")
    forged = TestClient(
        create_app(review.store, review.dir),
        base_url=ORIGIN,
        cookies={"bbjtune_session": f"{session_id}.{int(reviewer) + 1}.{mac}"},
    )
    assert forged.get("/next", follow_redirects=False).headers["location"] == "/"


def test_security_headers(review):
    response = _client(review).get("/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in response.text.replace('<script src="/static/review.js" defer></script>', "")


# ----------------------------------------------------------------------------- access token and host


def test_access_token_is_required_on_every_request(review):
    token = "t0ken-for-tests-0123456789"
    client = _client(review, token=token)
    for path in ("/", "/next", "/item/1", "/done", "/static/review.js", "/static/review.css"):
        assert client.get(path, follow_redirects=False).status_code == 401, path
    assert client.post("/login", data={"name": "x"}).status_code == 401
    assert client.get(f"/?token={token[:-1]}", follow_redirects=False).status_code == 401
    entry = client.get(f"/item/3?token={token}", follow_redirects=False)
    assert entry.status_code == 303 and entry.headers["location"] == "/item/3"  # token leaves the address bar
    assert "HttpOnly" in entry.headers["set-cookie"]
    assert client.get("/").status_code == 200  # now the cookie carries it
    bearer = _client(review, token=token)
    assert bearer.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert bearer.get("/", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_loopback_server_checks_the_host_header(review):
    client = _client(review, allowed_hosts=LOOPBACK_HOSTS)
    assert client.get("/").status_code == 200
    assert client.get("/", headers={"Host": "localhost:8765"}).status_code == 200
    assert client.get("/", headers={"Host": "attacker.example:8765"}).status_code == 400


# ----------------------------------------------------------------------------- blinding


def test_the_page_never_says_which_model_is_which(review):
    secrets_of_the_runs = [
        BASE_LABEL,
        TUNED_LABEL,
        str(review.base),
        str(review.tuned),
        "1.2345",
        "9.8765",
        "eval/base",
        "eval/tuned",
        "empty output",
    ]
    field_names = set()
    for name in ("Ann", "Bob"):
        client = _client(review)
        responses = [client.get("/"), _login(client, name)]
        for stored in review.store.active_items():
            responses.append(client.get(f"/item/{stored.id}"))
        responses.append(_rate(client, review.store.active_items()[0].id, _csrf(responses[-1].text)))
        responses += [client.get("/done"), client.get("/static/review.js"), client.get("/static/review.css")]
        for response in responses:
            blob = response.text + json.dumps(dict(response.headers)) + str(response.url)
            for secret in secrets_of_the_runs:
                assert secret not in blob, (secret, str(response.url))
            if "html" in response.headers.get("content-type", ""):
                field_names |= set(re.findall(r'name="([^"]+)"', response.text))
            assert not re.search(r"\b(run|model)[-_]?[ab]\b", blob, re.I)
    assert field_names == {
        "csrf",
        "name",
        "key",
        "prefer",
        "comment",
        "referrer",
        "viewport",
        *(f"{side}_{c}" for side in ("left", "right") for c in CRITERIA),
    }


def test_sides_are_random_per_reviewer_and_stable_across_reloads(review):
    left_run: dict[int, set[str]] = {}
    for name in ("Ann", "Bob", "Cy", "Dee"):
        client = _client(review)
        _login(client, name)
        for stored in review.store.active_items():
            first = client.get(f"/item/{stored.id}").text
            again = client.get(f"/item/{stored.id}").text
            assert _answer_html(first, "left") == _answer_html(again, "left")  # stable across reloads
            assert {_run_shown(first, "left", stored), _run_shown(first, "right", stored)} == {"a", "b"}
            left_run.setdefault(stored.id, set()).add(_run_shown(first, "left", stored))
    # 4 reviewers x 8 prompts: some prompt is shown both ways (chance that none is: (1/8)^8).
    assert any(len(runs) == 2 for runs in left_run.values())


def test_screen_choices_are_stored_in_model_terms(review):
    client = _client(review)
    page = _login(client)
    stored = review.store.active_item(_item_id(page))
    base_side = "left" if _run_shown(page.text, "left", stored) == "a" else "right"
    _rate(
        client,
        stored.id,
        _csrf(page.text),
        prefer=base_side,
        left=5 if base_side == "left" else 1,
        right=5 if base_side == "right" else 1,
    )
    record = review.store.rating_records()[0]
    assert record["preferred"] == "a"
    assert all(record[f"a_{c}"] == 5 and record[f"b_{c}"] == 1 for c in CRITERIA)
    assert record["left_side"] == ("a" if base_side == "left" else "b")


def test_hostile_model_output_is_text(review):
    client = _client(review)
    _login(client)
    stored = next(s for s in review.store.active_items() if s.item.prompt_id == "read-file")
    html = client.get(f"/item/{stored.id}").text
    assert HOSTILE_MARK not in html and "</textarea><b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "{{ 7*7 }}" in html and "{% raw %}" in html


# ----------------------------------------------------------------------------- results


def test_results_are_written_after_each_rating_and_exported(review):
    client = _client(review)
    page = _login(client)
    for k in range(3):
        response = _rate(
            client,
            _item_id(page),
            _csrf(page.text),
            prefer=("left", "right", "tie")[k],
            comment='=HYPERLINK("http://x")' if k == 0 else "",
        )
        page = client.get(response.headers["location"])
    summary = json.loads((review.dir / "results.json").read_text())
    assert summary["kind"] == "bbjtune-review" and summary["overall"]["n_ratings"] == 3
    assert summary["runs"]["a"]["label"] == BASE_LABEL and summary["runs"]["b"]["label"] == TUNED_LABEL
    assert summary["reviewers"] == ["Ann"] and summary["n_items"] == 8 and summary["n_rated_items"] == 3
    overall = summary["overall"]
    assert overall["wins"] + overall["losses"] + overall["ties"] == 3 and overall["ties"] == 1
    assert 0 <= overall["ci_low"] <= overall["win_rate"] <= overall["ci_high"] <= 1
    assert sum(g["n_ratings"] for g in summary["by_category"].values()) == 3
    assert summary["by_reviewer"]["Ann"]["n_ratings"] == 3

    # The hook for `bbjtune eval compare`: every path a caller is likely to hold finds it.
    for path in (
        review.dir / "results.json",
        review.dir,
        review.base,
        review.tuned,
        review.root / "eval",
        review.tuned / "generations.jsonl",
    ):
        assert load_review_summary(path)["overall"] == overall, path
    assert load_review_summary(review.root / "nothing-here") is None

    files = export_ratings(review.store, review.root / "out")
    rows = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert len(rows) == 3 and {r["preferred_label"] for r in rows} <= {BASE_LABEL, TUNED_LABEL, "tie"}
    with open(files[1], newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 3
    assert [r["comment"] for r in table if r["comment"]] == [
        '\'=HYPERLINK("http://x")'
    ]  # no spreadsheet formula
    assert [r["comment"] for r in rows if r["comment"]] == ['=HYPERLINK("http://x")']  # JSONL keeps the text


def test_summary_that_is_not_json_is_a_clear_error(tmp_path):
    from bbjtune.errors import BbjtuneError

    folder = tmp_path / "eval" / "review"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text("{ half a file")
    with pytest.raises(BbjtuneError, match="not valid JSON"):
        load_review_summary(tmp_path / "eval")


def test_an_unrated_review_counts_as_absent(review):
    from bbjtune.review.results import write_results

    write_results(review.store, review.dir)
    assert (review.dir / "results.json").is_file()
    assert load_review_summary(review.dir) is None


def test_switching_reviewer(review):
    client = _client(review)
    page = _login(client, "Ann")
    _rate(client, _item_id(page), _csrf(page.text))
    assert (
        client.post("/logout", data={"csrf": _csrf(page.text)}, follow_redirects=False).headers["location"]
        == "/"
    )
    assert 'name="name"' in client.get("/").text
    bob = _login(client, "Bob")
    assert (
        _progress(bob.text) == "0 of 8 rated" and 'Reviewing as <strong id="reviewer-name">Bob<' in bob.text
    )
