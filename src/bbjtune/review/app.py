"""The review web app: a name, then one prompt at a time with two anonymous answers to rate.

Pages: `/` (enter your name, and your reviewer key when the name is already yours), `/next` (your first unrated prompt), `/item/<n>` (a prompt with its
two answers and the rating form), `/done`. Forms post back to the same address and redirect
(post/redirect/get), so a reload never submits twice. Everything on the page speaks of "left"
and "right"; the mapping to runs lives only in the server (see `blind.py`).

Each saved rating also rewrites `results.json` in the review folder, so `bbjtune eval compare`
always sees the current state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from bbjtune import web_security as security
from bbjtune.review import blind
from bbjtune.review.render import render_answer
from bbjtune.review.results import write_results
from bbjtune.review.storage import CRITERIA, MAX_COMMENT_CHARS, Rating, ReviewStore, StoredItem

HERE = Path(__file__).parent
CRITERION_TITLES = {
    "correctness": "Correctness",
    "idiom": "Idiomatic BBj",
    "generation_fit": "Fits the BBj generation",
}
CRITERION_HINTS = {
    "correctness": "Does it do what was asked, and would it run?",
    "idiom": "Is it the way an experienced BBj developer would write it?",
    "generation_fit": "Right style for the asked generation (character UI, Visual PRO/5, GUI, DWC)?",
}
SIDES = ("left", "right")
FORBIDDEN_TEXT = "This form is out of date or did not come from this page. Reload the page and try again.\n"


@dataclass
class Session:
    id: str
    reviewer_id: int | None
    changed: bool  # the cookie must be (re)sent


class ReviewApp:
    def __init__(
        self,
        store: ReviewStore,
        review_dir: str | Path,
        token: str | None = None,
        allowed_hosts: frozenset[str] | None = None,
        secure_cookies: bool = False,
    ):
        self.store = store
        self.review_dir = Path(review_dir)
        self.secure_cookies = secure_cookies
        self._results_lock = threading.Lock()
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates = Jinja2Templates(env=env)
        routes = [
            Route("/", self.home, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/next", self.next_item, methods=["GET"]),
            Route("/item/{item_id:int}", self.show_item, methods=["GET"]),
            Route("/item/{item_id:int}", self.rate_item, methods=["POST"]),
            Route("/done", self.done, methods=["GET"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        self.starlette = Starlette(routes=routes)
        self.asgi = security.AccessGuard(self.starlette, token=token, allowed_hosts=allowed_hosts)

    # ------------------------------------------------------------------ sessions

    def _session(self, request: Request) -> Session:
        found = security.read_session(self.store.secret, request.cookies.get(security.SESSION_COOKIE))
        if found is None:
            return Session(security.new_session_id(), None, changed=True)
        session_id, reviewer_id = found
        if reviewer_id is not None and self.store.reviewer_name(reviewer_id) is None:
            return Session(session_id, None, changed=True)
        return Session(session_id, reviewer_id, changed=False)

    def _finish(self, response: Response, session: Session) -> Response:
        if session.changed:
            response.set_cookie(
                security.SESSION_COOKIE,
                security.sign_session(self.store.secret, session.id, session.reviewer_id),
                max_age=60 * 60 * 24 * 365,
                httponly=True,
                samesite="lax",
                secure=self.secure_cookies,
            )
        return response

    def _page(
        self, request: Request, session: Session, template: str, status: int = 200, **context
    ) -> Response:
        context.update(
            csrf=security.csrf_token(self.store.secret, session.id),
            reviewer=self.store.reviewer_name(session.reviewer_id) if session.reviewer_id else None,
            reviewer_key=self.store.reviewer_key(session.reviewer_id) if session.reviewer_id else None,
        )
        return self._finish(
            self.templates.TemplateResponse(request, template, context, status_code=status), session
        )

    async def _checked_form(self, request: Request, session: Session):
        """The posted form, or None when it fails the CSRF or origin check."""
        form = await request.form(
            max_files=0, max_fields=security.MAX_FORM_FIELDS, max_part_size=security.MAX_BODY_BYTES
        )
        if (
            session.changed
            or not security.same_origin(request)
            or not security.csrf_ok(self.store.secret, session.id, form.get("csrf"))
        ):
            return None
        return form

    # ------------------------------------------------------------------ progress

    def _ordered(self, reviewer_id: int) -> list[StoredItem]:
        return blind.review_order(self.store.secret, reviewer_id, self.store.active_items())

    def _next_unrated(self, reviewer_id: int, after: int | None = None) -> int | None:
        order = [s.id for s in self._ordered(reviewer_id)]
        rated = self.store.rated_item_ids(reviewer_id)
        start = order.index(after) + 1 if after in order else 0
        for item_id in order[start:] + order[:start]:
            if item_id not in rated:
                return item_id
        return None

    # ------------------------------------------------------------------ pages

    def home(self, request: Request) -> Response:
        session = self._session(request)
        if session.reviewer_id is not None:
            return self._finish(RedirectResponse("/next", status_code=303), session)
        return self._page(
            request, session, "login.html", name="", error=None, n_items=len(self.store.active_items())
        )

    async def login(self, request: Request) -> Response:
        session = self._session(request)
        form = await self._checked_form(request, session)
        if form is None:
            return self._finish(PlainTextResponse(FORBIDDEN_TEXT, status_code=403), session)
        name, key = str(form.get("name", "")), str(form.get("key", ""))
        try:
            session.reviewer_id, _ = await run_in_threadpool(self.store.login, name, key)
        except ValueError as exc:
            return self._page(
                request,
                session,
                "login.html",
                status=400,
                name=name[:200],
                error=str(exc),
                n_items=len(self.store.active_items()),
            )
        session.changed = True
        return self._finish(RedirectResponse("/next", status_code=303), session)

    async def logout(self, request: Request) -> Response:
        session = self._session(request)
        if await self._checked_form(request, session) is None:
            return self._finish(PlainTextResponse(FORBIDDEN_TEXT, status_code=403), session)
        session.reviewer_id, session.changed = None, True
        return self._finish(RedirectResponse("/", status_code=303), session)

    def next_item(self, request: Request) -> Response:
        session = self._session(request)
        if session.reviewer_id is None:
            return self._finish(RedirectResponse("/", status_code=303), session)
        item_id = self._next_unrated(session.reviewer_id)
        target = f"/item/{item_id}" if item_id is not None else "/done"
        return self._finish(RedirectResponse(target, status_code=303), session)

    def done(self, request: Request) -> Response:
        session = self._session(request)
        if session.reviewer_id is None:
            return self._finish(RedirectResponse("/", status_code=303), session)
        order = self._ordered(session.reviewer_id)
        rated = len(self.store.rated_item_ids(session.reviewer_id))
        return self._page(
            request, session, "done.html", rated=rated, total=len(order), first=order[0].id if order else None
        )

    def show_item(self, request: Request) -> Response:
        session = self._session(request)
        if session.reviewer_id is None:
            return self._finish(RedirectResponse("/", status_code=303), session)
        stored = self.store.active_item(request.path_params["item_id"])
        if stored is None:
            return self._page(request, session, "missing.html", status=404)
        existing = self.store.rating(session.reviewer_id, stored.id)
        return self._item_page(
            request, session, stored, self._form_values(stored, session.reviewer_id, existing)
        )

    async def rate_item(self, request: Request) -> Response:
        session = self._session(request)
        form = await self._checked_form(request, session)
        if form is None or session.reviewer_id is None:
            return self._finish(PlainTextResponse(FORBIDDEN_TEXT, status_code=403), session)
        stored = self.store.active_item(request.path_params["item_id"])
        if stored is None:
            return self._page(request, session, "missing.html", status=404)
        values = {key: str(form.get(key, "")) for key in self._field_names()}
        try:
            rating = self._rating_from_form(stored, session.reviewer_id, values)
        except ValueError as exc:
            return self._item_page(request, session, stored, values, error=str(exc), status=400)
        await run_in_threadpool(self._save, session.reviewer_id, stored.id, rating)
        following = self._next_unrated(session.reviewer_id, after=stored.id)
        target = f"/item/{following}" if following is not None else "/done"
        return self._finish(RedirectResponse(target, status_code=303), session)

    # ------------------------------------------------------------------ the rating form

    @staticmethod
    def _field_names() -> list[str]:
        return ["prefer", "comment"] + [f"{side}_{c}" for side in SIDES for c in CRITERIA]

    def _form_values(self, stored: StoredItem, reviewer_id: int, rating: Rating | None) -> dict[str, str]:
        """A stored rating in screen terms (left/right) for this reviewer."""
        if rating is None:
            return {key: "" for key in self._field_names()}
        left = blind.left_side(self.store.secret, reviewer_id, stored.id)
        by_run = {"a": rating.scores_a, "b": rating.scores_b}
        right = "b" if left == "a" else "a"
        values = {
            "prefer": "tie"
            if rating.preferred == "tie"
            else ("left" if rating.preferred == left else "right"),
            "comment": rating.comment,
        }
        for side, run in (("left", left), ("right", right)):
            values.update({f"{side}_{c}": str(by_run[run][c]) for c in CRITERIA})
        return values

    def _rating_from_form(self, stored: StoredItem, reviewer_id: int, values: dict[str, str]) -> Rating:
        left = blind.left_side(self.store.secret, reviewer_id, stored.id)
        right = "b" if left == "a" else "a"
        prefer = values["prefer"]
        if prefer not in ("left", "right", "tie"):
            raise ValueError("Choose which answer is better: left (A), tie (S) or right (D).")
        scores: dict[str, dict[str, int]] = {}
        for side, run in (("left", left), ("right", right)):
            scores[run] = {}
            for criterion in CRITERIA:
                raw = values[f"{side}_{criterion}"]
                if raw not in ("1", "2", "3", "4", "5"):
                    raise ValueError(
                        f"Score {CRITERION_TITLES[criterion].lower()} of the {side} answer (1 to 5)."
                    )
                scores[run][criterion] = int(raw)
        comment = values["comment"].replace("\r\n", "\n").strip()
        if len(comment) > MAX_COMMENT_CHARS:
            raise ValueError(f"The comment is longer than {MAX_COMMENT_CHARS} characters.")
        preferred = "tie" if prefer == "tie" else (left if prefer == "left" else right)
        return Rating(
            preferred=preferred, left_side=left, scores_a=scores["a"], scores_b=scores["b"], comment=comment
        )

    def _save(self, reviewer_id: int, item_id: int, rating: Rating) -> None:
        self.store.save_rating(reviewer_id, item_id, rating)
        with self._results_lock:
            write_results(self.store, self.review_dir)

    def _item_page(
        self,
        request: Request,
        session: Session,
        stored: StoredItem,
        values: dict[str, str],
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        reviewer_id = session.reviewer_id
        order = [s.id for s in self._ordered(reviewer_id)]
        position = order.index(stored.id)
        rated = self.store.rated_item_ids(reviewer_id)
        left = blind.left_side(self.store.secret, reviewer_id, stored.id)
        answers = {"a": stored.item.a, "b": stored.item.b}
        sides = []
        for side, run in (("left", left), ("right", "b" if left == "a" else "a")):
            answer = answers[run]
            sides.append({"name": side, "rendered": render_answer(answer.output, answer.code)})
        return self._page(
            request,
            session,
            "item.html",
            status=status,
            item=stored.item,
            item_id=stored.id,
            sides=sides,
            values=values,
            error=error,
            criteria=CRITERIA,
            titles=CRITERION_TITLES,
            hints=CRITERION_HINTS,
            position=position + 1,
            total=len(order),
            rated=len(rated),
            is_rated=stored.id in rated,
            previous_id=order[position - 1] if position > 0 else None,
            next_id=order[position + 1] if position + 1 < len(order) else None,
        )


def create_app(
    store: ReviewStore,
    review_dir: str | Path,
    token: str | None = None,
    allowed_hosts: frozenset[str] | None = None,
    secure_cookies: bool = False,
):
    """The ASGI app for one review (the store, where results.json goes, and the access rules)."""
    return ReviewApp(
        store, review_dir, token=token, allowed_hosts=allowed_hosts, secure_cookies=secure_cookies
    ).asgi
