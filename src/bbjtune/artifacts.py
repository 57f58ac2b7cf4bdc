"""Run directories, manifests and atomic writes: the files every stage reads and writes.

Each stage writes one directory with a `manifest.json` that records what went in (paths and
sha256), the config, library versions, the git revision, timings and metrics. Every file is written
atomically: to a temporary file beside the target, flushed and fsynced, then renamed over the final
path, so a killed run never leaves a half-written file under its real name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from bbjtune.errors import BbjtuneError

MANIFEST_NAME = "manifest.json"
TRACKED_LIBRARIES = (
    "bbjtune",
    "torch",
    "transformers",
    "tokenizers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "bitsandbytes",
    "gguf",
    "llama_cpp_python",
    "unsloth",
)


# ----------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success it is fsynced and renamed onto `final`.

    The caller writes the temporary path however it likes (a library's `save()`, a subprocess).
    If the block raises, the temporary file is removed and `final` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix + ".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would hide outputs from other users
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process umask, read without changing it where the system shows it (Linux: /proc)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it, then put it back
    os.umask(mask)
    return mask


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new directory inside `parent`, to fill and then rename into place (after `follow_umask`).

    tempfile.mkdtemp creates it 0700 whatever the umask, and the rename keeps that mode: a model
    directory made that way cannot be read by an Ollama or vLLM service or a colleague running as
    another user. It gets the mode a plain `mkdir` gives instead.
    """
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def follow_umask(tree: str | os.PathLike) -> None:
    """Give `tree` and everything in it the modes that `open`/`mkdir` give under the current umask.

    For directories written by libraries that do not: safetensors 0.8 writes every weights file
    0600 whatever the umask (measured: `save_file` under umask 022 gives 0600).
    """
    mask = current_umask()
    root = Path(tree)
    os.chmod(root, 0o777 & ~mask)
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        executable = path.is_dir() or os.stat(path).st_mode & 0o111
        os.chmod(path, (0o777 if executable else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_open(final: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file for writing that replaces `final` only when the block succeeds
    (closing it flushes it; atomic_path fsyncs it before the rename)."""
    if "b" in mode:
        encoding = None
    with atomic_path(final) as tmp:
        with open(tmp, mode, encoding=encoding, newline="" if encoding else None) as fh:
            yield fh


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(
        path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    )


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Write one JSON object per line; returns the number of rows written."""
    n = 0
    with atomic_open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
            n += 1
    return n


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, keep_existing: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside `final`; on success it takes `final`'s place.

    The old `final` is moved aside, never deleted, before the new one is renamed in, and removed
    only afterwards: a crash at any point leaves either the old or the new directory under the
    real name (or the old one beside it as `.<name>.old.*`), never nothing and never a half-written
    one. With `keep_existing` a `final` that appeared meanwhile (another process built the same
    cache entry) is kept and the new directory discarded. If the block raises, `final` is untouched.
    The directory and what the block wrote into it get the modes the umask gives (`follow_umask`).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(final.parent, prefix=f".{final.name}.")
    try:
        yield tmp
        if keep_existing and final.exists():
            return
        # safetensors writes weights 0600: a service running as another user could not read them
        follow_umask(tmp)
        _replace_dir(tmp, final)
        _fsync_dir(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dir_size(path: str | os.PathLike) -> int:
    """Bytes of the files under a directory."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def remove_dir(path: str | os.PathLike) -> None:
    """Delete a directory so that no half-deleted copy is ever left under its name.

    It is renamed aside first (atomic), then removed: a run killed meanwhile leaves `.<name>.gone.*`
    beside it, never a model directory with some of its weight files missing."""
    path = Path(path)
    if not path.exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.gone.", dir=path.parent))
    os.replace(path, aside / path.name)
    _fsync_dir(path.parent)
    shutil.rmtree(aside, ignore_errors=True)


def _replace_dir(new: Path, final: Path) -> None:
    if not final.exists():
        os.replace(new, final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
    os.replace(final, old / final.name)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ----------------------------------------------------------------------------- reading JSONL


def read_jsonl(
    path: str | os.PathLike, hint: str = "fix or remove the line, or re-run the stage that wrote it"
) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object is an error."""
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BbjtuneError(
                        f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})", hint
                    ) from None
                if not isinstance(obj, dict):
                    raise BbjtuneError(
                        f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}",
                        "each line must be one {...} object",
                    )
                rows.append((lineno, obj))
    except UnicodeDecodeError as exc:
        raise BbjtuneError(f"{path}: not UTF-8 text (byte {exc.start})", "save the file as UTF-8") from None
    return rows


def most_common_system_prompt(conversations: Any) -> str | None:
    """The most common first system message of ChatML conversations (None when there is none)."""
    counts: dict[str, int] = {}
    for messages in conversations:
        if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system":
            text = messages[0].get("content") or ""
            counts[text] = counts.get(text, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None


def common_system_prompt(path: str | os.PathLike) -> str | None:
    """The system prompt a ChatML JSONL file such as train.jsonl mostly uses (None without one): what a
    model was trained under, for evaluating any model (the base too) the same way."""
    return most_common_system_prompt(
        row.get("messages") for row in read_complete_jsonl(path) if isinstance(row, dict)
    )


def read_complete_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The complete lines of a file a run appends to as it goes (generations, metrics); [] when absent.

    A last line without its newline was being written when the run was killed: it is dropped (the
    run writes it again when it resumes), and so is a line that does not parse.
    """
    rows: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return rows
    with open(p, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


# ----------------------------------------------------------------------------- hashing


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_inputs(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Path, size and sha256 of each input file (directories are walked, files sorted)."""
    out = []
    for p in paths:
        p = Path(p)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            out.append({"path": str(f), "bytes": f.stat().st_size, "sha256": sha256_file(f)})
    return out


# ----------------------------------------------------------------------------- environment


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in TRACKED_LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name.replace("_", "-"))
    return versions


def resource_peaks() -> dict[str, float | None]:
    """This process's peak memory so far: GPU (torch's reserved bytes, where torch is loaded and has used
    CUDA; None otherwise) and host RAM (resident set of this process and of its finished children), in
    GiB. Stage manifests carry it, so a run's memory needs are on record per stage."""
    import resource

    gpu = None
    torch = sys.modules.get("torch")  # never imported for this: a data stage stays light
    if torch is not None:
        with contextlib.suppress(Exception):
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                gpu = round(torch.cuda.max_memory_reserved() / 2**30, 2)  # this process's device
    kib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return {"peak_gpu_gib": gpu, "peak_ram_gib": round(kib / 2**20, 2)}


def git_revision(cwd: str | os.PathLike | None = None) -> str | None:
    """The checkout's commit (with `-dirty` when there are local changes), or None outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------------- run directories


class StageRun:
    """One stage's output directory and its manifest, written atomically as the stage goes.

    Use as a context manager: on exit the manifest records the status (`complete`, `failed`,
    `interrupted`), the wall time and everything recorded on it.

        with StageRun(out_dir, stage="data", config=cfg) as run:
            run.add_inputs([path])
            ...
            run.metrics["kept"] = 123
    """

    def __init__(self, directory: str | os.PathLike, stage: str, config: Any = None):
        self.dir = Path(directory)
        self.stage = stage
        self.config = config
        self.inputs: list[dict[str, Any]] = []
        self.outputs: list[str] = []
        self.metrics: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.extra: dict[str, Any] = {}
        self._started = 0.0

    def __enter__(self) -> StageRun:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BbjtuneError(
                f"cannot create output directory {self.dir}: {exc.strerror}",
                "choose a writable location (output_dir in the config)",
            ) from exc
        self._started = time.time()
        self.write_manifest(status="running")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.timings["total_s"] = round(time.time() - self._started, 3)
        if exc_type is None:
            status = "complete"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "interrupted"
        else:
            status = "failed"
            self.extra["error"] = str(exc)
        self.write_manifest(status=status)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t0 = time.time()
        try:
            yield
        finally:
            self.timings[f"{name}_s"] = round(time.time() - t0, 3)

    def add_inputs(self, paths: Iterable[str | os.PathLike]) -> None:
        self.inputs.extend(describe_inputs(paths))

    def path(self, name: str) -> Path:
        return self.dir / name

    def manifest(self, status: str) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "status": status,
            "created": datetime.fromtimestamp(self._started or time.time(), timezone.utc).isoformat(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "inputs": self.inputs,
            "outputs": sorted(set(self.outputs)),
            "config": self.config,
            "versions": library_versions(),
            "git_revision": git_revision(Path(__file__).parent),
            "timings": self.timings,
            "metrics": self.metrics,
            "peaks": resource_peaks(),
            **self.extra,
        }

    def write_manifest(self, status: str) -> Path:
        return atomic_write_json(self.dir / MANIFEST_NAME, self.manifest(status))


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BbjtuneError(f"{path} not found", "run the stage that produces this directory first") from exc
    except json.JSONDecodeError as exc:
        raise BbjtuneError(
            f"{path} is not valid JSON (line {exc.lineno})",
            "the stage was probably killed while writing; re-run it",
        ) from exc
