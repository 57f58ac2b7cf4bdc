"""End to end in a real headless Chromium: name, three ratings by keyboard, reload, hostile output.

Uses Debian's chromium (`apt-get install -y chromium`; `make test` installs it when it can) through
Playwright's Python API with `executable_path`; Playwright's own browser download is never used.
The test skips, saying why, when either is missing. Set BBJTUNE_REVIEW_SCREENSHOT=<file.png> to
keep a copy of the screenshot outside the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from review_fixtures import HOSTILE_MARK, PROMPTS, start_server, stop_server, write_eval_runs

from bbjtune.review.storage import ReviewStore

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    for candidate in (
        os.environ.get("BBJTUNE_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip(
        "browser test skipped: Debian's chromium is not installed "
        "(apt-get install -y chromium, or set BBJTUNE_CHROMIUM to a Chromium binary)"
    )


@pytest.fixture
def browser_page():
    executable = _chromium()
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="browser test skipped: playwright is not installed (pip install -e '.[test]')",
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            yield page
        finally:
            browser.close()


def assert_text(page, selector: str, text: str, contains: bool = False, timeout: int = 15_000) -> None:
    """Wait (instead of reading once) until the element shows the text: navigation and scripts take time."""
    page.wait_for_function(
        "([s, t, c]) => { const e = document.querySelector(s); "
        "return !!e && (c ? e.textContent.includes(t) : e.textContent === t); }",
        arg=[selector, text, contains],
        timeout=timeout,
    )


def _rate_with_keyboard(page, scores: str, preference: str) -> None:
    before = page.text_content("#progress-text")
    for key in scores:
        page.keyboard.press(key)
    page.keyboard.press(preference)
    page.keyboard.press("Enter")
    page.wait_for_function(
        "previous => document.querySelector('#progress-text').textContent !== previous", arg=before
    )


def test_review_in_a_real_browser(tmp_path, browser_page):
    page = browser_page
    base, tuned = write_eval_runs(tmp_path)
    proc, printed = start_server(str(base), str(tuned), "--port", "0")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        url = printed["url"]
        page.goto(url)
        # the name field takes the focus by itself (autofocus); Chromium applies it a frame after the page
        # loads, and a key typed before that is lost (a run once read "nn Expert")
        page.wait_for_function("document.activeElement && document.activeElement.id === 'name'")
        page.keyboard.type("Ann Expert")
        page.keyboard.press("Enter")
        page.wait_for_selector("#rating-form")
        total = len(PROMPTS)
        assert_text(page, "#progress-text", f"0 of {total} rated")
        assert page.text_content("#reviewer-name") == "Ann Expert"

        # Enter before everything is scored: the page says what is missing and stays.
        first_url = page.url
        page.keyboard.press("Enter")
        assert_text(page, "#client-error", "Score correctness of the left answer", contains=True)
        assert page.url == first_url

        _rate_with_keyboard(page, "445532", "a")  # six scores (1-5), left is better, save
        assert_text(page, "#progress-text", f"1 of {total} rated")
        _rate_with_keyboard(page, "333333", "ArrowRight")  # right is better
        third_url = page.url
        comment = "</textarea><script>alert(3)</script> {{ 7*7 }}"
        page.keyboard.press("c")
        page.keyboard.type(comment)
        page.keyboard.press("Escape")
        _rate_with_keyboard(page, "555511", "s")  # a tie, with a comment
        assert_text(page, "#progress-text", f"3 of {total} rated")

        page.reload()
        assert_text(page, "#progress-text", f"3 of {total} rated")
        page.goto(url)  # start over from the front page: straight back to the next prompt
        page.wait_for_selector("#rating-form")
        assert_text(page, "#progress-text", f"3 of {total} rated")
        page.goto(third_url)
        assert page.input_value("#comment") == comment
        assert page.is_checked('input[name="prefer"][value="tie"]')

        store = ReviewStore(tmp_path / "eval" / "review" / "ratings.sqlite")
        records = store.rating_records()
        assert len(records) == 3 and {r["reviewer"] for r in records} == {"Ann Expert"}
        assert sorted(r["preferred"] == "tie" for r in records) == [False, False, True]
        assert any(r["comment"] == comment for r in records)

        # The answer with <script>, {{ }} and </textarea> is shown as text and runs nothing.
        hostile = next(s for s in store.active_items() if s.item.prompt_id == "read-file")
        page.goto(f"{url}item/{hostile.id}")
        shown = page.inner_text(".answers")
        assert HOSTILE_MARK in shown and "{{ 7*7 }}" in shown and "</textarea><b>bold</b>" in shown
        assert page.evaluate("document.scripts.length") == 1  # only the page's own review.js
        assert page.locator(".answers b, .answers textarea").count() == 0
        assert page.locator(".tok-keyword").count() > 0  # highlighted
        assert page.locator(".diag-error").count() == 1  # the checker's message under the broken line
        assert page.inner_text(".diag-error").startswith("line 3, column")
        page.keyboard.press("4")
        page.keyboard.press("3")  # a half-filled form, for the screenshot
        assert page.locator(".criterion.active").count() == 1
        shot = tmp_path / "review-page.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        if os.environ.get("BBJTUNE_REVIEW_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["BBJTUNE_REVIEW_SCREENSHOT"])
        assert dialogs == [] and errors == []
    finally:
        stop_server(proc)
