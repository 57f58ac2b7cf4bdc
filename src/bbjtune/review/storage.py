"""The review database: items, reviewers and ratings in one SQLite file.

Durability: the file runs in WAL mode with `synchronous=FULL`, and each rating is saved in its own
transaction, so a crash or a killed server loses at most the rating being saved; every rating
committed before stays, and the file is never left half-written.

Items are stored with their content (prompt and both answers), so exports need only this file.
An item is identified by a digest of its prompt and answers: when a run is evaluated again and an
answer changes, the new version becomes a new item and the ratings of the old version are kept
but no longer counted (they rated different text). Which items count is decided each time the
server starts (`sync_items`).

Reviewers: a name (case-insensitive) and a key. The key is derived from the review's secret and a
random salt per reviewer (so the server can show it again to its owner, and stores no password);
the first login with a name creates the reviewer, every later login with that name needs the key.
Reviewers created before keys existed get one at their next login.

Ratings are stored in model terms ("a" = run A, "b" = run B), never in screen terms; the side the
reviewer saw on the left is kept too (`left_side`) so position bias can be measured.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import sqlite3
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bbjtune.errors import BbjtuneError
from bbjtune.review.items import Answer, Item, ReviewSet

SCHEMA_VERSION = "1"
CRITERIA = ("correctness", "idiom", "generation_fit")
PREFERENCES = ("a", "b", "tie")
MAX_NAME_CHARS = 60
MAX_COMMENT_CHARS = 4000
MAX_ITEM_ID = (1 << 63) - 1  # SQLite's largest INTEGER: a larger id in a URL is simply not an item
KEY_CHARS = 12  # 60 bits, in base32: guessing it over HTTP is hopeless

_SCORE_COLUMNS = [f"{side}_{criterion}" for side in "ab" for criterion in CRITERIA]

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    suite TEXT NOT NULL, prompt_id TEXT NOT NULL, category TEXT NOT NULL, generation TEXT NOT NULL,
    task TEXT NOT NULL, prompt TEXT NOT NULL,
    output_a TEXT NOT NULL, code_a TEXT NOT NULL, failed_a INTEGER NOT NULL,
    output_b TEXT NOT NULL, code_b TEXT NOT NULL, failed_b INTEGER NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS reviewers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created TEXT NOT NULL,
    key_salt TEXT
);
CREATE TABLE IF NOT EXISTS ratings (
    reviewer_id INTEGER NOT NULL REFERENCES reviewers(id),
    item_id INTEGER NOT NULL REFERENCES items(id),
    preferred TEXT NOT NULL CHECK (preferred IN ('a', 'b', 'tie')),
    left_side TEXT NOT NULL CHECK (left_side IN ('a', 'b')),
    {", ".join(f"{c} INTEGER NOT NULL CHECK ({c} BETWEEN 1 AND 5)" for c in _SCORE_COLUMNS)},
    comment TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (reviewer_id, item_id)
);
"""


@dataclass(frozen=True)
class StoredItem:
    id: int
    digest: str
    item: Item


@dataclass(frozen=True)
class Rating:
    """One reviewer's judgement of one item, in model terms."""

    preferred: str  # "a", "b" or "tie"
    left_side: str  # which run's answer was shown on the left: "a" or "b"
    scores_a: dict[str, int]  # criterion -> 1..5
    scores_b: dict[str, int]
    comment: str = ""

    def __post_init__(self) -> None:
        if self.preferred not in PREFERENCES:
            raise ValueError(f"preferred must be one of {PREFERENCES}")
        if self.left_side not in ("a", "b"):
            raise ValueError("left_side must be 'a' or 'b'")
        for scores in (self.scores_a, self.scores_b):
            if set(scores) != set(CRITERIA) or not all(
                isinstance(v, int) and 1 <= v <= 5 for v in scores.values()
            ):
                raise ValueError(f"scores need {', '.join(CRITERIA)}, each 1 to 5")
        if len(self.comment) > MAX_COMMENT_CHARS:
            raise ValueError(f"the comment is longer than {MAX_COMMENT_CHARS} characters")


@dataclass(frozen=True)
class SyncReport:
    items: int
    new: int
    changed: int  # prompts whose answers changed since some reviewer rated them
    ratings_set_aside: int  # ratings of those older versions, kept but not counted


def normalize_reviewer_name(name: str) -> str:
    """Collapse whitespace; 1 to 60 printable characters. Raises ValueError with the reason."""
    cleaned = " ".join(name.split())
    if not cleaned:
        raise ValueError("enter your name (it keeps your ratings apart from other reviewers')")
    if len(cleaned) > MAX_NAME_CHARS:
        raise ValueError(f"a name has at most {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in cleaned):
        raise ValueError("a name cannot contain control characters")
    return cleaned


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ReviewStore:
    """The SQLite file of one review. Each method opens its own short-lived connection, so the
    store can be shared by the web server's worker threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._transaction() as db:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                columns = {row[1] for row in db.execute("PRAGMA table_info(reviewers)")}
                if "key_salt" not in columns:  # a review database from before reviewer keys
                    db.execute("ALTER TABLE reviewers ADD COLUMN key_salt TEXT")
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
                db.execute("INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (secrets.token_hex(32),))
                version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise BbjtuneError(
                f"{self.path} is not a usable review database ({exc})",
                "point --db at another file, or move this one away to start afresh",
            ) from exc
        except OSError as exc:
            raise BbjtuneError(
                f"cannot create {self.path}: {exc.strerror}", "choose a writable --db path"
            ) from exc
        if version != SCHEMA_VERSION:
            raise BbjtuneError(
                f"{self.path} was written by another bbjtune version (schema {version})",
                "use a new --db file for this review",
            )
        self.secret = bytes.fromhex(self.meta("secret") or "")

    # ------------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed as a whole when the block succeeds, else rolled back."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    # ------------------------------------------------------------------ meta

    def meta(self, key: str) -> str | None:
        with self._reading() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def labels(self) -> tuple[str, str]:
        """The labels of run A and run B (the base and the tuned model, usually)."""
        return self.meta("label_a") or "A", self.meta("label_b") or "B"

    # ------------------------------------------------------------------ items

    def sync_items(self, review: ReviewSet) -> SyncReport:
        """Store the runs' items and make exactly them the ones that count."""
        with self._transaction() as db:
            known = dict(
                db.execute("SELECT key, value FROM meta WHERE key IN ('label_a', 'label_b')").fetchall()
            )
            if known and (known.get("label_a"), known.get("label_b")) != (
                review.run_a.label,
                review.run_b.label,
            ):
                raise BbjtuneError(
                    f"{self.path} holds the review of {known.get('label_a')} vs {known.get('label_b')}, "
                    f"not {review.run_a.label} vs {review.run_b.label}",
                    "pass --db with another file for this pair of runs",
                )
            before = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            db.executemany(
                "INSERT OR IGNORE INTO items (digest, suite, prompt_id, category, generation, task, prompt, "
                "output_a, code_a, failed_a, output_b, code_b, failed_b) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        it.digest,
                        it.suite,
                        it.prompt_id,
                        it.category,
                        it.generation,
                        it.task,
                        it.prompt,
                        it.a.output,
                        it.a.code,
                        int(it.a.failed),
                        it.b.output,
                        it.b.code,
                        int(it.b.failed),
                    )
                    for it in review.items
                ],
            )
            db.execute("UPDATE items SET active = 0")
            db.executemany(
                "UPDATE items SET active = 1, position = ? WHERE digest = ?",
                [(pos, it.digest) for pos, it in enumerate(review.items)],
            )
            new = db.execute("SELECT COUNT(*) FROM items").fetchone()[0] - before
            stale = db.execute(
                "SELECT COUNT(DISTINCT old.suite || '/' || old.prompt_id), COUNT(r.item_id) FROM items old "
                "JOIN ratings r ON r.item_id = old.id WHERE old.active = 0 AND EXISTS (SELECT 1 FROM items cur "
                "WHERE cur.active = 1 AND cur.suite = old.suite AND cur.prompt_id = old.prompt_id)"
            ).fetchone()
            for key, value in (
                ("label_a", review.run_a.label),
                ("label_b", review.run_b.label),
                ("path_a", str(review.run_a.path)),
                ("path_b", str(review.run_b.path)),
                ("synced", _now()),
            ):
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        return SyncReport(items=len(review.items), new=new, changed=stale[0], ratings_set_aside=stale[1])

    @staticmethod
    def _stored(row: sqlite3.Row) -> StoredItem:
        item = Item(
            suite=row["suite"],
            prompt_id=row["prompt_id"],
            category=row["category"],
            generation=row["generation"],
            task=row["task"],
            prompt=row["prompt"],
            a=Answer(row["output_a"], row["code_a"], bool(row["failed_a"])),
            b=Answer(row["output_b"], row["code_b"], bool(row["failed_b"])),
        )
        return StoredItem(id=row["id"], digest=row["digest"], item=item)

    def active_items(self) -> list[StoredItem]:
        with self._reading() as db:
            rows = db.execute("SELECT * FROM items WHERE active = 1 ORDER BY position").fetchall()
        return [self._stored(row) for row in rows]

    def active_item(self, item_id: int) -> StoredItem | None:
        if not 0 < item_id <= MAX_ITEM_ID:
            return None
        with self._reading() as db:
            row = db.execute("SELECT * FROM items WHERE id = ? AND active = 1", (item_id,)).fetchone()
        return self._stored(row) if row else None

    # ------------------------------------------------------------------ reviewers

    def reviewer_id(self, name: str) -> int:
        """The id of the reviewer with this name (case-insensitive), created on first use."""
        name = normalize_reviewer_name(name)
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO reviewers (name, created, key_salt) VALUES (?, ?, ?)",
                (name, _now(), secrets.token_hex(16)),
            )
            return db.execute("SELECT id FROM reviewers WHERE name = ?", (name,)).fetchone()[0]

    def login(self, name: str, key: str = "") -> tuple[int, bool]:
        """(reviewer id, whether the reviewer is new) for a login with this name and key.

        A new name creates the reviewer; a known name needs its key (ValueError otherwise, with
        the reason to show)."""
        name = normalize_reviewer_name(name)
        with self._transaction() as db:
            row = db.execute("SELECT id, key_salt FROM reviewers WHERE name = ?", (name,)).fetchone()
            if row is None:
                cursor = db.execute(
                    "INSERT INTO reviewers (name, created, key_salt) VALUES (?, ?, ?)",
                    (name, _now(), secrets.token_hex(16)),
                )
                return cursor.lastrowid, True
            if row["key_salt"] is None:  # from before reviewer keys: this login claims the name
                db.execute(
                    "UPDATE reviewers SET key_salt = ? WHERE id = ?", (secrets.token_hex(16), row["id"])
                )
                return row["id"], False
            expected = self._key(row["id"], row["key_salt"])
            typed = "".join(ch for ch in key.lower() if ch.isalnum())
            if not hmac.compare_digest(
                typed.encode("utf-8", "surrogateescape"), expected.replace("-", "").encode()
            ):
                raise ValueError(
                    "This name is already taken by a reviewer. If it is yours, enter your reviewer key "
                    "(shown at the top of the page in the browser you first used); otherwise choose "
                    "another name."
                )
            return row["id"], False

    def reviewer_key(self, reviewer_id: int) -> str | None:
        """The key that lets this reviewer log in from another browser (None for an unknown reviewer)."""
        with self._reading() as db:
            row = db.execute("SELECT key_salt FROM reviewers WHERE id = ?", (reviewer_id,)).fetchone()
        if row is None or row[0] is None:
            return None
        return self._key(reviewer_id, row[0])

    def _key(self, reviewer_id: int, salt: str) -> str:
        digest = hmac.new(self.secret, f"reviewer key|{reviewer_id}|{salt}".encode(), hashlib.sha256).digest()
        raw = base64.b32encode(digest).decode().lower()[:KEY_CHARS]
        return "-".join(raw[i : i + 4] for i in range(0, KEY_CHARS, 4))

    def reviewer_keys(self) -> list[tuple[str, str | None]]:
        """(name, key) of every reviewer, for the person running the review (a reviewer who lost theirs)."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT id, name, key_salt FROM reviewers ORDER BY name COLLATE NOCASE"
            ).fetchall()
        return [
            (row["name"], self._key(row["id"], row["key_salt"]) if row["key_salt"] else None) for row in rows
        ]

    def reviewer_name(self, reviewer_id: int) -> str | None:
        with self._reading() as db:
            row = db.execute("SELECT name FROM reviewers WHERE id = ?", (reviewer_id,)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ ratings

    def save_rating(self, reviewer_id: int, item_id: int, rating: Rating) -> None:
        """Insert or replace one rating in its own durable transaction."""
        now = _now()
        values = [rating.scores_a[c] for c in CRITERIA] + [rating.scores_b[c] for c in CRITERIA]
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO ratings (reviewer_id, item_id, preferred, left_side, {', '.join(_SCORE_COLUMNS)}, "
                f"comment, created, updated) VALUES (?, ?, ?, ?, {', '.join('?' * len(_SCORE_COLUMNS))}, ?, ?, ?) "
                "ON CONFLICT (reviewer_id, item_id) DO UPDATE SET preferred = excluded.preferred, "
                "left_side = excluded.left_side, "
                + ", ".join(f"{c} = excluded.{c}" for c in _SCORE_COLUMNS)
                + ", comment = excluded.comment, updated = excluded.updated",
                (reviewer_id, item_id, rating.preferred, rating.left_side, *values, rating.comment, now, now),
            )

    def rating(self, reviewer_id: int, item_id: int) -> Rating | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT * FROM ratings WHERE reviewer_id = ? AND item_id = ?", (reviewer_id, item_id)
            ).fetchone()
        if row is None:
            return None
        return Rating(
            preferred=row["preferred"],
            left_side=row["left_side"],
            scores_a={c: row[f"a_{c}"] for c in CRITERIA},
            scores_b={c: row[f"b_{c}"] for c in CRITERIA},
            comment=row["comment"],
        )

    def rated_item_ids(self, reviewer_id: int) -> set[int]:
        """The active items this reviewer has rated."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT r.item_id FROM ratings r JOIN items i ON i.id = r.item_id "
                "WHERE r.reviewer_id = ? AND i.active = 1",
                (reviewer_id,),
            ).fetchall()
        return {row[0] for row in rows}

    def rating_records(self, active_only: bool = True) -> list[dict]:
        """Every rating joined with its item and reviewer, as plain dicts (for statistics and export)."""
        where = "WHERE i.active = 1" if active_only else ""
        with self._reading() as db:
            rows = db.execute(
                "SELECT rv.name AS reviewer, i.id AS item_id, i.suite, i.prompt_id, i.category, i.generation, "
                "i.task, i.prompt, i.active, r.* FROM ratings r JOIN items i ON i.id = r.item_id "
                f"JOIN reviewers rv ON rv.id = r.reviewer_id {where} "
                "ORDER BY i.position, rv.name COLLATE NOCASE"
            ).fetchall()
        records = []
        for row in rows:
            record = dict(row)
            record.pop("reviewer_id", None)
            record["active"] = bool(record["active"])
            records.append(record)
        return records

    def integrity_ok(self) -> bool:
        with self._reading() as db:
            return db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
