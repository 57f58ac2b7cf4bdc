"""`bbjtune review` as a user runs it: the server process, the access token, export, bad input."""

from __future__ import annotations

import json
import re
import socket
import statistics
import subprocess
import sys
import time

import httpx
from conftest import REPO_ROOT, run_cli
from review_fixtures import BASE_LABEL, TUNED_LABEL, start_server, stop_server, write_eval_runs

from bbjtune.review.items import pair_runs
from bbjtune.review.storage import CRITERIA, Rating, ReviewStore


def test_server_beyond_loopback_requires_the_printed_token(tmp_path):
    base, tuned = write_eval_runs(tmp_path)
    proc, printed = start_server(str(base), str(tuned), "--host", "0.0.0.0", "--port", "0")
    try:
        token = printed["token"]
        assert len(token) >= 24 and printed["url"].endswith(f"?token={token}")
        port = int(re.search(r":(\d+)/", printed["url"]).group(1))
        assert f"{BASE_LABEL} (A) vs {TUNED_LABEL} (B)" in printed["stdout"]
        local = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{local}/").status_code == 401
        assert httpx.get(f"{local}/static/review.js").status_code == 401
        assert httpx.get(f"{local}/?token=wrong").status_code == 401
        with httpx.Client(base_url=local) as client:
            entry = client.get(f"/?token={token}")
            assert entry.status_code == 303 and entry.headers["location"] == "/"
            page = client.get("/")
            assert page.status_code == 200 and "Your name" in page.text
    finally:
        out, _ = stop_server(proc)
    assert "Stopped." in out
    assert (tmp_path / "eval" / "review" / "ratings.sqlite").is_file()
    assert json.loads((tmp_path / "eval" / "review" / "results.json").read_text())["n_items"] == 8


def test_loopback_server_needs_no_token_and_reports_problems(tmp_path):
    base, tuned = write_eval_runs(tmp_path)
    proc, printed = start_server(
        str(base), str(tuned), "--port", "0", "--db", str(tmp_path / "r" / "x.sqlite")
    )
    try:
        assert "token" not in printed and printed["url"].startswith("http://127.0.0.1:")
        assert httpx.get(printed["url"]).status_code == 200
        assert httpx.get(printed["url"], headers={"Host": "rebind.example"}).status_code == 400
        with httpx.Client() as client:  # one kept-alive connection, as a browser uses
            times = []
            for _ in range(9):
                started = time.perf_counter()
                assert client.get(f"{printed['url'].rstrip('/')}/static/review.js").status_code == 200
                times.append(time.perf_counter() - started)
        # a socket opened without IPPROTO_TCP keeps Nagle on: ~45 ms a request (a delayed ACK), ~1 ms without
        assert statistics.median(times) < 0.02, f"median {statistics.median(times) * 1000:.0f} ms a request"
    finally:
        _, err = stop_server(proc)
    assert re.search(r"generations.jsonl:4: not valid JSON.*line skipped", err)
    assert "1 prompts only in qwen-base-zz7" in err
    assert (tmp_path / "r" / "x.sqlite").is_file() and (tmp_path / "r" / "results.json").is_file()


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    base, tuned = write_eval_runs(tmp_path)
    missing = run_cli("review", str(tmp_path / "nope"), str(tuned))
    assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        taken = run_cli("review", str(base), str(tuned), "--port", str(port))
    assert taken.returncode == 2 and "cannot listen" in taken.stderr and "--port" in taken.stderr
    short = run_cli("review", str(base), str(tuned), "--token", "abc")
    assert short.returncode == 2 and "too short" in short.stderr
    no_db = run_cli("review", "export", str(tmp_path / "empty"))
    assert no_db.returncode == 2 and "no review database" in no_db.stderr
    bad_format = run_cli("review", "export", str(tmp_path), "--format", "xlsx")
    assert bad_format.returncode == 2 and "xlsx" in bad_format.stderr


# `python -m bbjtune ARGS` in an interpreter where the review extra (bbjtune[review]) is not installed
WITHOUT_REVIEW_EXTRA = (
    "import runpy, sys\n"
    "for name in ('starlette', 'uvicorn', 'python_multipart'):\n"
    "    sys.modules[name] = None  # import fails as if absent\n"
    "runpy.run_module('bbjtune', run_name='__main__', alter_sys=True)\n"
)


def test_without_the_review_extra_the_other_commands_run_and_review_says_what_to_install(tmp_path):
    base, tuned = write_eval_runs(tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", WITHOUT_REVIEW_EXTRA, *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert run("eval", "--help").returncode == 0
    review = run("review", str(base), str(tuned))
    assert review.returncode == 2 and "Traceback" not in review.stderr, review.stderr
    assert "the review page needs" in review.stderr and "pip install 'bbjtune[review]'" in review.stderr


def test_export_writes_files_and_prints_the_results(tmp_path):
    base, tuned = write_eval_runs(tmp_path)
    store = ReviewStore(tmp_path / "eval" / "review" / "ratings.sqlite")
    store.sync_items(pair_runs(base, tuned))
    scores = {c: 4 for c in CRITERIA}
    for name, preferences in (("Ann", "bbbatb"), ("Bob", "bba")):
        reviewer = store.reviewer_id(name)
        for stored, preferred in zip(store.active_items(), preferences):
            store.save_rating(reviewer, stored.id, Rating(preferred.replace("t", "tie"), "a", scores, scores))
    result = run_cli("review", "export", str(tmp_path / "eval"), "--out", str(tmp_path / "export"))
    assert result.returncode == 0, result.stderr
    for name in ("ratings.jsonl", "ratings.csv"):
        assert (tmp_path / "export" / name).is_file()
    assert len((tmp_path / "export" / "ratings.jsonl").read_text().splitlines()) == 9
    summary = json.loads((tmp_path / "eval" / "review" / "results.json").read_text())
    assert summary["overall"]["n_ratings"] == 9 and summary["overall"]["n_prompts"] == 6
    assert summary["agreement"]["prompts_with_several_reviewers"] == 3
    assert f"{TUNED_LABEL} vs {BASE_LABEL}" in result.stdout and "by reviewer" in result.stdout
    assert re.search(r"all prompts\s+\d+\.\d%", result.stdout)
