"""Blinding: which answer a reviewer sees on the left, and the order in which they see prompts.

Both are drawn at random per reviewer but must stay the same across reloads and server restarts,
so they are derived from a keyed hash: HMAC-SHA256 with the review's secret (kept in the database,
never sent to a browser) over the reviewer and the item. Without the secret, nothing on the page
says which side is which run.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def _draw(secret: bytes, purpose: str, reviewer_id: int, item_id: int) -> bytes:
    message = f"{purpose}|{reviewer_id}|{item_id}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


def left_side(secret: bytes, reviewer_id: int, item_id: int) -> str:
    """'a' or 'b': the run whose answer this reviewer sees on the left for this item."""
    return "a" if _draw(secret, "side", reviewer_id, item_id)[0] & 1 else "b"


def review_order(
    secret: bytes, reviewer_id: int, items: Sequence[T], item_id=lambda item: item.id
) -> list[T]:
    """The items in this reviewer's own shuffled order (keeps order effects out of the results)."""
    return sorted(items, key=lambda item: _draw(secret, "order", reviewer_id, item_id(item)))
