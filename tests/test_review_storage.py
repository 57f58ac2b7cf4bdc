"""Pairing two eval runs and the review database: what is stored, what counts, what survives a crash."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from review_fixtures import BASE_LABEL, PROMPTS, TUNED_LABEL, write_eval_runs

from bbjtune.errors import BbjtuneError
from bbjtune.review.items import pair_runs
from bbjtune.review.storage import CRITERIA, Rating, ReviewStore, normalize_reviewer_name


def _rating(preferred="b", left="a", score=3, comment=""):
    scores = {c: score for c in CRITERIA}
    return Rating(
        preferred=preferred, left_side=left, scores_a=dict(scores), scores_b=dict(scores), comment=comment
    )


@pytest.fixture
def runs(tmp_path):
    return write_eval_runs(tmp_path)


@pytest.fixture
def store(tmp_path, runs):
    store = ReviewStore(tmp_path / "eval" / "review" / "ratings.sqlite")
    store.sync_items(pair_runs(*runs))
    return store


# ----------------------------------------------------------------------------- pairing


def test_pairing_by_suite_and_id_with_problems_reported(runs):
    review = pair_runs(*runs)
    assert [it.prompt_id for it in review.items] == [p[0] for p in PROMPTS]
    assert (review.run_a.label, review.run_b.label) == (BASE_LABEL, TUNED_LABEL)
    assert review.only_in_a == 1 and review.only_in_b == 0  # "only-base"
    assert len(review.problems) == 1 and "generations.jsonl:4: not valid JSON" in review.problems[0]
    first = review.items[0]
    assert first.a.output == PROMPTS[0][4]  # sample 0, not the second sample
    assert first.b.output == PROMPTS[0][5]
    empty = next(it for it in review.items if it.prompt_id == "empty")
    assert empty.a.failed and empty.a.output == "" and not empty.b.failed


def test_pairing_accepts_files_and_rejects_bad_input(tmp_path, runs):
    review = pair_runs(runs[0] / "generations.jsonl", runs[1] / "generations.jsonl")
    assert len(review.items) == len(PROMPTS)
    with pytest.raises(BbjtuneError, match="not found"):
        pair_runs(tmp_path / "nowhere", runs[1])
    with pytest.raises(BbjtuneError, match="same file"):
        pair_runs(runs[0], runs[0] / "generations.jsonl")
    other = tmp_path / "other"
    other.mkdir()
    (other / "generations.jsonl").write_text(json.dumps({"id": "zzz", "output": "x", "suite": "s"}) + "\n")
    with pytest.raises(BbjtuneError, match="no prompt in common"):
        pair_runs(runs[0], other)


def test_same_labels_are_told_apart(tmp_path, runs):
    copy = tmp_path / "again" / "eval" / "base"
    copy.mkdir(parents=True)
    (copy / "generations.jsonl").write_bytes((runs[0] / "generations.jsonl").read_bytes())
    review = pair_runs(runs[0], copy)
    assert review.run_a.label != review.run_b.label


# ----------------------------------------------------------------------------- the database


def test_database_is_wal_and_items_are_stored_with_content(store):
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT COUNT(*) FROM items WHERE active = 1").fetchone()[0] == len(PROMPTS)
    db.close()
    items = store.active_items()
    assert [s.item.prompt_id for s in items] == [p[0] for p in PROMPTS]
    assert store.active_item(items[1].id).item.a.output == PROMPTS[1][4]
    assert store.labels() == (BASE_LABEL, TUNED_LABEL)
    assert len(store.secret) == 32


def test_save_replace_and_read_a_rating(store):
    ann = store.reviewer_id("Ann")
    item = store.active_items()[0]
    store.save_rating(ann, item.id, _rating("b", comment="first"))
    store.save_rating(ann, item.id, _rating("tie", left="b", score=5, comment="second thoughts"))
    got = store.rating(ann, item.id)
    assert got.preferred == "tie" and got.left_side == "b" and got.comment == "second thoughts"
    assert got.scores_a == {c: 5 for c in CRITERIA}
    assert store.rated_item_ids(ann) == {item.id}
    records = store.rating_records()
    assert len(records) == 1 and records[0]["reviewer"] == "Ann" and records[0]["prompt_id"] == "hello"
    assert store.rating(store.reviewer_id("Bob"), item.id) is None


def test_reviewer_names_are_normalized_and_case_insensitive(store):
    assert store.reviewer_id("  Ann   Smith ") == store.reviewer_id("ann smith")
    assert store.reviewer_name(store.reviewer_id("ann smith")) == "Ann Smith"
    for bad in ("", "   ", "x" * 61, "a\x00b"):
        with pytest.raises(ValueError):
            normalize_reviewer_name(bad)


def test_rating_validation():
    with pytest.raises(ValueError):
        _rating(preferred="left")
    with pytest.raises(ValueError):
        _rating(score=6)
    with pytest.raises(ValueError):
        Rating("a", "a", {"correctness": 3}, {c: 3 for c in CRITERIA})
    with pytest.raises(ValueError):
        _rating(comment="x" * 5000)


def test_changed_answers_set_old_ratings_aside(tmp_path, runs, store):
    ann = store.reviewer_id("Ann")
    for stored in store.active_items()[:2]:
        store.save_rating(ann, stored.id, _rating("a"))
    # Evaluate the tuned run again: the answer to "hello" changes.
    path = runs[1] / "generations.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.startswith('{"')]
    rows[0]["output"] = '```bbj\nPRINT "Hello again"\n```'
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = store.sync_items(pair_runs(*runs))
    assert (report.items, report.new, report.changed, report.ratings_set_aside) == (len(PROMPTS), 1, 1, 1)
    assert len(store.rating_records()) == 1  # only the unchanged prompt still counts
    assert len(store.rating_records(active_only=False)) == 2
    assert len(store.rated_item_ids(ann)) == 1


def test_another_pair_of_runs_needs_another_database(tmp_path, runs, store):
    other = tmp_path / "x" / "eval" / "tuned2"
    other.mkdir(parents=True)
    rows = [
        json.loads(line)
        for line in (runs[1] / "generations.jsonl").read_text().splitlines()
        if line.startswith('{"')
    ]
    (other / "generations.jsonl").write_text(
        "".join(json.dumps({**r, "model": "tuned2"}) + "\n" for r in rows)
    )
    with pytest.raises(BbjtuneError, match="--db"):
        store.sync_items(pair_runs(runs[0], other))


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "ratings.sqlite"
    bad.write_text("this is not sqlite, just text that happens to be long enough " * 20)
    with pytest.raises(BbjtuneError, match="not a usable review database"):
        ReviewStore(bad)


def test_a_killed_writer_loses_at_most_the_rating_in_flight(tmp_path, store):
    """Save ratings in a child process, kill it with SIGKILL mid-stream, and check the file."""
    n_items = len(store.active_items())
    script = textwrap.dedent(f"""
        import itertools, sys
        from bbjtune.review.storage import CRITERIA, Rating, ReviewStore
        store = ReviewStore({str(store.path)!r})
        items = store.active_items()
        for n in itertools.count():
            reviewer = store.reviewer_id(f"r{{n // {n_items}}}")
            scores = {{c: 1 + n % 5 for c in CRITERIA}}
            store.save_rating(reviewer, items[n % {n_items}].id,
                              Rating("b", "a", dict(scores), dict(scores), comment=str(n)))
            print(n, flush=True)
    """)
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    confirmed = -1
    try:
        for line in child.stdout:
            confirmed = int(line)
            if confirmed >= 40:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    for line in child.stdout.read().split():  # what it printed before it died
        confirmed = int(line)
    child.stdout.close()
    assert confirmed >= 40
    assert store.integrity_ok()
    saved = {int(r["comment"]) for r in store.rating_records()}
    # Every rating reported as saved is there; beyond it, at most the one in flight.
    assert set(range(confirmed + 1)) <= saved
    assert max(saved) <= confirmed + 1
