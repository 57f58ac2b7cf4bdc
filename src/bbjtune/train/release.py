"""Merged 16-bit models a run may delete to save disk, and how each is rebuilt when needed again.

Two kinds are as large as the model (27.5 GiB for 14B): stage 1's merged model (`cpt/merged`, the base
of stage 2; deleted after stage 2 with `train.cpt.keep_merged: false`) and each self-training round's
start model (`<stage>/round-N/start`; deleted once superseded with `train.keep_round_models: false`).
A deleted model leaves its record behind (`cpt/merged.released.json`, or `start.json` marked
`released`): what it was merged from, so it can be merged again from the original model and the chain
of adapters, without the models before it. A directory is renamed aside before it is removed
(`remove_dir`), so a killed run never leaves a model with some weight files missing.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from bbjtune.artifacts import atomic_write_json, dir_size, remove_dir
from bbjtune.config import RunConfig
from bbjtune.models.merge import merge_adapters
from bbjtune.models.trained import TRAINED_NAME, release_stage1_base
from bbjtune.train import cpt
from bbjtune.train.job import read_record

START_FILE = "start.json"

RELEASED_FILE = "merged.released.json"


def release_stage1_merged(cfg: RunConfig, console: Console) -> None:
    """Delete cpt/merged once nothing trains on it any more (train.cpt.keep_merged: false).

    A trained.json naming it is rewritten first (the original model plus stage 1's adapter, which
    evaluation and export fold in on the fly), then the directory goes: a run killed in between is
    consistent."""
    merged, adapter = cfg.train_dir / "cpt" / "merged", cfg.train_dir / "cpt" / "adapter"
    there = (merged / "config.json").exists()
    if not there and not was_released(merged):
        return
    if _names(cfg.train_dir, merged):
        release_stage1_base(cfg.train_dir, cfg.model.source, adapter)
    if not there:  # released by an earlier run
        return
    size = dir_size(merged)
    atomic_write_json(merged.parent / RELEASED_FILE, {"bytes": size, "rebuilt_from": str(adapter)})
    remove_dir(merged)
    console.print(
        f"[green]✓[/] released stage 1's merged model ({size / 2**30:.1f} GiB; train.cpt.keep_merged: false): "
        "evaluation and export fold stage 1's adapter in on the fly",
        highlight=False,
    )


def _names(train_dir: Path, model: Path) -> bool:
    """Whether the run's trained.json names `model` as its base."""
    base = read_record(train_dir / TRAINED_NAME).get("base_model")
    return bool(base) and _same_path(Path(base), model)


def ensure_stage1_merged(cfg: RunConfig, base: str, console: Console) -> None:
    """Rebuild cpt/merged from the original model and stage 1's adapter when it was released."""
    merged = cfg.train_dir / "cpt" / "merged"
    if Path(base) != merged or (merged / "config.json").exists():
        return
    console.print(f"rebuilding stage 1's merged model (it was released) → {merged}")
    cpt.merge_stage1(cfg.model.source, cfg.train_dir / "cpt" / "adapter", merged, cfg.model.dtype)
    (merged.parent / RELEASED_FILE).unlink(missing_ok=True)


def start_chain(cfg: RunConfig, model: str) -> tuple[str, list[str]]:
    """The original model and the adapters that, merged in this order, give `model` (a start or stage 1's merge).

    Read from the records the merges left (`start.json`: what each start was merged from), so a start
    that was deleted can be rebuilt without the starts before it."""
    path = Path(model)
    rec = read_record(path.parent / START_FILE) if path.name == "start" else {}
    if rec.get("adapter"):
        root, adapters = start_chain(cfg, rec["base"])
        return root, [*adapters, rec["adapter"]]
    if _same_path(path, cfg.train_dir / "cpt" / "merged"):
        return cfg.model.source, [str(cfg.train_dir / "cpt" / "adapter")]
    return model, []


def release_superseded(cfg: RunConfig, base: str, console: Console) -> None:
    """Delete the model a new start is merged from when the config lets it go (it can be rebuilt from its chain).

    Stage 1's merged model goes with train.cpt.keep_merged: false, an earlier round's start with
    train.keep_round_models: false; never the original model, nor a start the run's trained.json names
    (evaluation and export load it until this run writes its own)."""
    path = Path(base)
    if _same_path(path, cfg.train_dir / "cpt" / "merged"):
        if not cfg.train.cpt.keep_merged:
            release_stage1_merged(cfg, console)
        return
    record = path.parent / START_FILE
    if (
        cfg.train.keep_round_models
        or path.name != "start"
        or not record.exists()
        or not (path / "config.json").exists()
        or _names(cfg.train_dir, path)
    ):
        return
    size = dir_size(path)
    # the record first: a run killed before the directory is gone can still rebuild it
    atomic_write_json(record, {**read_record(record), "released": True})
    remove_dir(path)
    console.print(
        f"[green]✓[/] released {path} ({size / 2**30:.1f} GiB; train.keep_round_models: false): the next model "
        "is merged from the original one and the adapters",
        highlight=False,
    )


def merge_start(cfg: RunConfig, root: str, adapters: list[str], out: Path) -> None:
    """Merge `adapters` into `root`, in order, as a chat model in `out` (on the GPU when there is one)."""
    import torch

    merge_adapters(
        root,
        adapters,
        out,
        tokenizer_source=adapters[-1],
        chat=True,
        dtype=cfg.model.dtype,
        device_map={"": 0} if torch.cuda.is_available() else None,
    )


def ensure_start(cfg: RunConfig, model: str, console: Console) -> None:
    """Rebuild a round's start that was released, from the original model and its adapters (trained.json names it)."""
    path = Path(model)
    if path.name != "start" or (path / "config.json").exists() or not was_released(path):
        return
    root, adapters = start_chain(cfg, model)
    console.print(f"rebuilding {path} (it was released) from {root} and {len(adapters)} adapter(s)")
    merge_start(cfg, root, adapters, path)
    record = path.parent / START_FILE
    atomic_write_json(record, {k: v for k, v in read_record(record).items() if k != "released"})


def was_released(model: str | Path) -> bool:
    """A merged model this run deleted: stage 1's (cpt/merged) or a round's start, its record left behind."""
    path = Path(model)
    if path.name == "merged":
        return (path.parent / RELEASED_FILE).exists()
    return path.name == "start" and bool(read_record(path.parent / START_FILE).get("released"))


def _same_path(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()
