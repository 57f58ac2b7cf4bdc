"""`bbjtune review`: start the blind review page for two evaluation runs, and export its results.

`bbjtune review RUN_A RUN_B` is short for `bbjtune review start RUN_A RUN_B`. The web framework is
imported inside `start` alone: it is an optional extra (bbjtune[review]), and `bbjtune --help`
stays fast.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from bbjtune.net import LOOPBACK_HOSTS, is_loopback, listening_socket, new_token
from bbjtune.errors import BbjtuneError
from bbjtune.review.items import pair_runs
from bbjtune.review.results import export_ratings, find_database, write_results
from bbjtune.review.storage import ReviewStore
from bbjtune.review_summary import DB_NAME, RESULTS_NAME, format_summary

DEFAULT_PORT = 8765


class _StartByDefault(TyperGroup):
    """`bbjtune review A B` runs `start`; `bbjtune review export ...` runs `export`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


review_app = typer.Typer(
    cls=_StartByDefault,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Blind human review: BBj experts compare two models' answers on a local web page.\n\n"
    "[bold]bbjtune review RUN_A RUN_B[/bold] starts the page (same as [bold]review start[/bold]); "
    "[bold]bbjtune review export REVIEW[/bold] writes the ratings as JSONL/CSV and the summary; "
    "[bold]bbjtune review keys REVIEW[/bold] prints the reviewers' keys.",
)


def _review_dir_for(run_b: Path) -> Path:
    """eval/review/ beside the evaluated runs (eval/<label>/ or eval/<label>/generations.jsonl)."""
    folder = run_b.parent if run_b.is_file() else run_b
    return folder.parent / "review"


def _ssl_options(cert: Path | None, key: Path | None) -> dict[str, str]:
    """uvicorn's TLS options, after checking that the pair loads (a bad file is one line, not a traceback)."""
    if cert is None or key is None:
        return {}
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise BbjtuneError(
            f"cannot use {cert} with {key}: {exc}", "pass a PEM certificate and its matching private key"
        ) from exc
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


@review_app.command("start")
def start(
    run_a: Annotated[
        Path,
        typer.Argument(
            help="The reference run: an evaluation folder such as "
            "runs/<name>/eval/base, or its generations.jsonl."
        ),
    ],
    run_b: Annotated[
        Path,
        typer.Argument(
            help="The run under test, usually runs/<name>/eval/tuned. "
            "Results say how often reviewers prefer it."
        ),
    ],
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = DEFAULT_PORT,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. Anything but 127.0.0.1/localhost "
            "requires the access token printed at start."
        ),
    ] = "127.0.0.1",
    db: Annotated[
        Path | None,
        typer.Option(help="The ratings database; default: ratings.sqlite in eval/review/ beside the runs."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="Access token to require (default: a new random one "
            "when listening beyond this machine; none on 127.0.0.1)."
        ),
    ] = None,
    require_token: Annotated[
        bool,
        typer.Option(
            "--require-token",
            help="Require a new random access token on 127.0.0.1 too (keeps other users of "
            "this machine out).",
        ),
    ] = False,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            help="Serve HTTPS with this certificate (PEM); needs --tls-key. Recommended beyond this machine."
        ),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The private key (PEM) of --tls-cert.")] = None,
) -> None:
    """Start the review page for two evaluation runs; stop it with Ctrl+C (ratings are saved as you go)."""
    try:
        import python_multipart  # noqa: F401  (form parsing)
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise BbjtuneError(
            f"the review page needs {exc.name}, which is not installed",
            "pip install 'bbjtune[review]' (or run `make install`)",
        ) from exc
    # the page's modules load starlette at their top: imported here, after the check above, so that
    # without the review extra every other command still runs and this one says what to install
    from bbjtune.review.app import create_app

    review = pair_runs(run_a, run_b)
    db_path = db or _review_dir_for(run_b) / DB_NAME
    review_dir = db_path.parent
    store = ReviewStore(db_path)
    sync = store.sync_items(review)
    local = is_loopback(host)
    if token is not None and len(token) < 16:
        raise BbjtuneError(
            "the access token is too short (fewer than 16 characters)",
            "leave --token out to get a random one",
        )
    if (not local or require_token) and token is None:
        token = new_token()
    if (tls_cert is None) != (tls_key is None):
        raise BbjtuneError(
            "--tls-cert and --tls-key go together", "pass both (PEM files), or neither for plain HTTP"
        )
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise BbjtuneError(f"{path} does not exist", "pass the PEM files of your certificate and its key")
    tls = _ssl_options(tls_cert, tls_key)
    scheme = "https" if tls else "http"
    sock = listening_socket(host, port)
    port = sock.getsockname()[1]
    write_results(store, review_dir)

    for problem in review.problems[:20]:
        typer.echo(f"warning: {problem}", err=True)
    if len(review.problems) > 20:
        typer.echo(f"warning: {len(review.problems) - 20} more problems in the generations files", err=True)
    if review.only_in_a or review.only_in_b:
        typer.echo(
            f"note: {review.only_in_a} prompts only in {review.run_a.label}, {review.only_in_b} only in "
            f"{review.run_b.label}; they are left out",
            err=True,
        )
    if sync.changed:
        typer.echo(
            f"note: the answers to {sync.changed} prompts changed since they were rated; their "
            f"{sync.ratings_set_aside} old ratings are kept in the database but no longer counted",
            err=True,
        )
    typer.echo(
        f"Reviewing {sync.items} prompts: {review.run_a.label} (A) vs {review.run_b.label} (B), blind."
    )
    typer.echo(f"Ratings: {db_path}   summary: {review_dir / RESULTS_NAME}")
    shown_host = f"[{host}]" if ":" in host else host
    if token:
        typer.echo(f"Access token: {token}")
    if local:
        typer.echo(f"Open {scheme}://{shown_host}:{port}/" + (f"?token={token}" if token else ""))
    else:
        name = socket.gethostname() if host in ("0.0.0.0", "::") else shown_host
        typer.echo(f"Open {scheme}://{name}:{port}/?token={token}")
        typer.echo("Anyone on the network with this address can rate; share it only with your reviewers.")
        if not tls:
            typer.echo(
                "warning: plain HTTP: the network can read the address, the token and the access cookie; "
                "serve HTTPS with --tls-cert/--tls-key",
                err=True,
            )
    typer.echo("Press Ctrl+C to stop.")

    app = create_app(
        store,
        review_dir,
        token=token,
        allowed_hosts=LOOPBACK_HOSTS | {host} if local else None,
        secure_cookies=bool(tls),
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", **tls))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it handled; stopping is the normal end
        pass
    finally:
        sock.close()
        summary = write_results(store, review_dir)
        typer.echo(
            f"Stopped. {summary['overall']['n_ratings']} ratings of {summary['n_rated_items']} prompts "
            f"so far; summary in {review_dir / RESULTS_NAME}"
        )


@review_app.command("keys")
def keys(
    review: Annotated[
        Path,
        typer.Argument(
            help="The review: its ratings.sqlite, its folder (eval/review), or the eval folder of the run."
        ),
    ],
) -> None:
    """Print each reviewer's key (for a reviewer who lost theirs: it logs their name in from another browser)."""
    db_path = find_database(review)
    if db_path is None:
        raise BbjtuneError(
            f"no review database at {review}",
            "pass the ratings.sqlite written by `bbjtune review`, or its folder",
        )
    rows = ReviewStore(db_path).reviewer_keys()
    if not rows:
        typer.echo("no reviewers yet")
    for name, key in rows:
        typer.echo(f"{name}\t{key or '(none yet: set at the next login)'}")


@review_app.command("export")
def export(
    review: Annotated[
        Path,
        typer.Argument(
            help="The review: its ratings.sqlite, its folder (eval/review), or the eval folder of the run."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for ratings.jsonl/ratings.csv (default: the review "
            "folder). results.json always goes to the review folder."
        ),
    ] = None,
    format: Annotated[str, typer.Option(help="jsonl, csv, or both separated by a comma.")] = "jsonl,csv",
    all_versions: Annotated[
        bool,
        typer.Option(
            "--all-versions",
            help="Also export ratings of answers that changed since (not counted in results).",
        ),
    ] = False,
) -> None:
    """Write every rating to ratings.jsonl / ratings.csv, rewrite results.json, and print the results."""

    formats = tuple(f.strip().lower() for f in format.split(",") if f.strip())
    unknown = set(formats) - {"jsonl", "csv"}
    if unknown or not formats:
        raise BbjtuneError(
            f"unknown export format {', '.join(sorted(unknown)) or '(none)'}", "use jsonl, csv or jsonl,csv"
        )
    db_path = find_database(review)
    if db_path is None:
        raise BbjtuneError(
            f"no review database at {review}",
            "pass the ratings.sqlite written by `bbjtune review`, or its folder",
        )
    store = ReviewStore(db_path)
    summary = write_results(store, db_path.parent)
    for path in export_ratings(store, out or db_path.parent, formats, include_set_aside=all_versions):
        typer.echo(f"wrote {path}")
    typer.echo(f"wrote {db_path.parent / 'results.json'}")
    typer.echo(format_summary(summary))
