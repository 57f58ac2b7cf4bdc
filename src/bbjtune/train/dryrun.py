"""`bbjtune train --dry-run`: everything that can be checked before a GPU is touched.

Validates the config and the data (already done by the caller), tokenizes the data exactly as
the trainer will, shows three examples with the trained tokens highlighted (green: the model
learns to produce these; grey: context only), reports lengths, truncation and packing, and
prints the per-GPU memory estimate with and without gradient checkpointing.
"""

from __future__ import annotations

import functools
import statistics
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bbjtune.config import RunConfig
from bbjtune.models.architecture import Architecture, known_architecture
from bbjtune.models.loading import model_config, torch_dtype
from bbjtune.models.chat_template import ENDOFTEXT
from bbjtune.train import backends
from bbjtune.train.inputs import TrainingData
from bbjtune.train.memory import GiB, estimate_for_config
from bbjtune.train.model_io import load_training_tokenizer
from bbjtune.train.resources import GPU_PLAN_SHARE, largest_batch, usable_gpu_memory
from bbjtune.sizing import (
    DISK_MARGIN,
    available_ram,
    ExportSizing,
    configured_kquant_source,
    free_disk,
)

TRAINED_STYLE = "bold black on green3"
CONTEXT_STYLE = "grey50"
SAMPLE_CHARS = 1600
# Cards the batch table sizes batches for: the memory torch reports for each (GiB).
CARDS_GIB = (("24 GB", 23.6), ("48 GB", 47.5), ("80 GB", 79.1), ("141 GB", 139.8))
BATCH_LIMIT = 64  # the batch table stops counting here ("64+")


def tokenize_conversation(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """(input ids, trained mask) of one conversation, the way trl's assistant-only loss computes them."""
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    return list(out["input_ids"]), list(out["assistant_masks"])


def render_tokens(tokenizer: Any, ids: list[int], mask: list[int], limit: int = SAMPLE_CHARS) -> Text:
    """The decoded tokens, trained ones highlighted; long samples keep their start and end."""
    text = Text()
    pieces = [(tokenizer.decode([i]), bool(m)) for i, m in zip(ids, mask)]
    total = sum(len(p) for p, _ in pieces)
    head = tail = None
    if total > limit:
        head, tail = limit * 2 // 3, limit // 3
    written = 0
    skipped = False
    for piece, trained in pieces:
        start = written
        written += len(piece)
        if head is not None and head < start and written < total - tail:
            if not skipped:
                text.append(f"\n  … {total - head - tail} characters not shown …\n", style="italic")
                skipped = True
            continue
        text.append(piece, style=TRAINED_STYLE if trained else CONTEXT_STYLE)
    return text


def packed_rows(lengths: list[int], max_length: int) -> int:
    """Rows after best-fit-decreasing packing (what trl's `bfd` does), each length capped at max_length."""
    free: list[int] = []
    for n in sorted((min(n, max_length) for n in lengths), reverse=True):
        best = min((i for i, f in enumerate(free) if f >= n), key=lambda i: free[i], default=None)
        if best is None:
            free.append(max_length - n)
        else:
            free[best] -= n
    return len(free)


def show_dry_run(cfg: RunConfig, stages: list[str], data: TrainingData, console: Console) -> None:
    console.rule(f"[bold]bbjtune train --dry-run[/] {cfg.name}")
    wanted = cfg.train.backend
    # an explicit unsloth is shown as asked (the real run says why it cannot run here); auto resolves as it will
    chosen = "unsloth" if wanted == "unsloth" else backends.choose_backend(wanted)
    q = cfg.train.quantization
    console.print(f"model      {cfg.model.source} ({cfg.model.kind}), stages: {' → '.join(stages)}")
    console.print(
        f"backend    {wanted} → {chosen} on this machine; weights "
        f"{'nf4 4-bit (QLoRA)' + (' + double quant' if q.double_quant else '') if q.load_in_4bit else cfg.model.dtype}"
    )
    console.print(
        f"LoRA       r={cfg.train.lora.r} alpha={cfg.train.lora.alpha} dropout={cfg.train.lora.dropout} "
        f"targets={cfg.train.lora.target_modules} rsLoRA={cfg.train.lora.use_rslora} DoRA={cfg.train.lora.use_dora}"
    )
    if chosen == "unsloth" and cfg.train.lora.dropout > 0:
        console.print(
            f"[yellow]note:[/] with LoRA dropout {cfg.train.lora.dropout} Unsloth runs the LoRA matrices without "
            "its fused kernels (slower); --set train.lora.dropout=0 keeps them",
            highlight=False,
        )
    console.print(
        f"data       {cfg.data_dir}: {len(data.conversations)} conversations, {len(data.heldout)} held out, "
        f"{len(data.texts)} stage 1 chunks"
    )
    if data.replay and "sft" in stages:
        ratio = cfg.train.sft.replay_ratio
        console.print(
            f"replay     {data.describe_replay(len(data.replay_sample(ratio, cfg.train.seed)), ratio)}"
        )

    tokenizer = load_training_tokenizer(cfg.model.source)
    for stage in stages:
        if stage == "cpt":
            _show_cpt(cfg, data, tokenizer, console)
        else:
            _show_sft(cfg, data, tokenizer, console)
    _show_memory(cfg, stages, tokenizer, console)
    _show_export(cfg, console)
    console.print("[green]✓[/] config and data are usable; nothing was trained.")


def _length_summary(lengths: list[int], max_length: int) -> str:
    over = sum(1 for n in lengths if n > max_length)
    return (
        f"tokens per example: min {min(lengths)}, median {int(statistics.median(lengths))}, max {max(lengths)}; "
        f"{over} longer than max_length {max_length}" + (" (truncated)" if over else "")
    )


def _steps(cfg: RunConfig, stage: str, rows: int) -> str:
    sc = getattr(cfg.train, stage)
    per_step = sc.per_device_batch_size * sc.gradient_accumulation_steps
    steps = sc.max_steps if sc.max_steps > 0 else max(1, -(-rows // per_step)) * sc.epochs
    return f"{rows} rows of up to {sc.max_length} tokens, {per_step} rows per optimizer step per GPU → ~{int(steps)} steps"


def _show_sft(cfg: RunConfig, data: TrainingData, tokenizer: Any, console: Console) -> None:
    sc = cfg.train.sft
    console.rule("stage 2 (SFT): three training examples")
    legend = Text("legend: ")
    legend.append("trained on (the answer and its <|im_end|>)", style=TRAINED_STYLE)
    legend.append("  ")
    legend.append("context only", style=CONTEXT_STYLE)
    console.print(legend)
    tokenized = [tokenize_conversation(tokenizer, c) for c in data.conversations]
    if not sc.assistant_only_loss:
        tokenized = [(ids, [1] * len(ids)) for ids, _ in tokenized]
    for n, (ids, mask) in enumerate(tokenized[:3], 1):
        console.rule(f"example {n}: {len(ids)} tokens, {sum(mask)} trained", style="dim")
        console.print(render_tokens(tokenizer, ids, mask), highlight=False, markup=False)
    lengths = [len(ids) for ids, _ in tokenized]
    trained = sum(sum(m) for _, m in tokenized)
    console.rule(style="dim")
    console.print(_length_summary(lengths, sc.max_length))
    console.print(
        f"trained tokens: {trained:,} of {sum(lengths):,} ({100 * trained / max(sum(lengths), 1):.0f}%)"
    )
    rows = packed_rows(lengths, sc.max_length) if sc.packing else len(lengths)
    fill = sum(min(n, sc.max_length) for n in lengths) / (rows * sc.max_length) if sc.packing else None
    console.print(
        _steps(cfg, "sft", rows) + (f"; packing fills {100 * fill:.0f}% of each row" if fill else "")
    )


def _show_cpt(cfg: RunConfig, data: TrainingData, tokenizer: Any, console: Console) -> None:
    sc = cfg.train.cpt
    console.rule("stage 1 (CPT): raw BBj code, every token trained")
    lengths = [len(tokenizer(t + ENDOFTEXT)["input_ids"]) for t in data.texts]
    ids = tokenizer(data.texts[0] + ENDOFTEXT)["input_ids"]
    console.print(render_tokens(tokenizer, ids, [1] * len(ids), limit=800), highlight=False, markup=False)
    console.print(
        f"{len(data.texts)} chunks, {sum(lengths):,} tokens; "
        + _length_summary(lengths, sc.max_length).replace(" (truncated)", " (continued in the next row)")
    )
    rows = -(-sum(lengths) // sc.max_length) if sc.packing else len(lengths)
    console.print(_steps(cfg, "cpt", rows))


@functools.lru_cache(maxsize=4)
def _architecture(source: str) -> Architecture | str:
    """The model's shape for both estimates (its config read once), or why it cannot be read."""
    arch = known_architecture(source)
    if arch is not None:
        return arch
    try:
        return Architecture.from_config(model_config(source))
    except Exception as exc:  # noqa: BLE001 — the estimates are optional: say why they are missing
        return str(exc)


def _show_memory(cfg: RunConfig, stages: list[str], tokenizer: Any, console: Console) -> None:
    arch = _architecture(cfg.model.source)
    if isinstance(arch, str):
        console.print(f"[yellow]memory estimate skipped:[/] cannot read the model's config ({arch})")
        return
    tokens = (
        2 if "sft" in stages and cfg.train.sft.train_chat_tokens != "no" and cfg.model.kind == "base" else 0
    )
    trained_tokens = {stage: tokens if stage == "sft" else 0 for stage in stages}  # chat-token rows trained
    unit, scale = ("GiB", 1.0) if arch.params > 5e7 else ("MiB", 1024.0)  # tiny models: MiB
    table = Table(
        title=f"GPU memory per GPU (estimate, {unit}) — {arch.params / 1e9:.2f}B parameters",
        title_justify="left",
    )
    table.add_column("stage")
    for col in ("weights", "LoRA+grads+optimizer", "activations", "output head", "overhead", "total"):
        table.add_column(col, justify="right")
    for stage, ckpt in _modes(stages):
        e = estimate_for_config(
            cfg, stage, arch, trainable_tokens=trained_tokens[stage], gradient_checkpointing=ckpt
        )
        if cfg.train.gradient_checkpointing == "auto":
            mark = (
                "" if ckpt else f" (auto: off where this fits in {GPU_PLAN_SHARE:.0%} of the free GPU memory)"
            )
        else:
            mark = " ←" if ckpt == cfg.train.gradient_checkpointing else ""
        table.add_row(
            f"{stage}, checkpointing {'on' if ckpt else 'off'}{mark}",
            *(
                f"{getattr(e, k) * scale / GiB:.1f}"
                for k in ("weights", "adapter", "activations", "output_head", "overhead")
            ),
            f"[bold]{e.total * scale / GiB:.1f}[/]",
        )
    console.print(table)
    sc = getattr(cfg.train, stages[-1])
    for strategy, gpus in (("zero2", 2), ("zero3", 4)):
        e = estimate_for_config(cfg, stages[-1], arch, trainable_tokens=tokens, strategy=strategy, gpus=gpus)
        console.print(f"  {strategy} on {gpus} GPUs: {e.total * scale / GiB:.1f} {unit} per GPU")
    console.print(
        f"  batch {sc.per_device_batch_size} x {sc.max_length} tokens per GPU; "
        "the CUDA context (~0.5 GiB) comes on top"
    )
    _show_batch_fit(cfg, stages, arch, trained_tokens, console)


def _modes(stages: list[str]) -> list[tuple[str, bool]]:
    """Each stage with checkpointing on, then off: the rows and columns of the dry run's memory tables."""
    return [(stage, ckpt) for stage in stages for ckpt in (True, False)]


def _show_batch_fit(
    cfg: RunConfig, stages: list[str], arch: Architecture, trained_tokens: dict[str, int], console: Console
) -> None:
    """The largest per-GPU batch each card holds, by the estimate, with checkpointing on and off: how to fill
    a card (raise the batch, lower the accumulation so the effective batch stays)."""
    stages = [s for s in stages if s in ("cpt", "sft")]
    if not stages:
        return
    cards = [(name, gib * GiB) for name, gib in CARDS_GIB]
    here = usable_gpu_memory()
    if here is not None:
        cards.insert(0, (f"this GPU ({here / GiB:.0f} GiB usable)", here))
    table = Table(
        title=(
            "per-GPU batch that fits, in rows of the stage's max_length "
            f"({GPU_PLAN_SHARE:.0%} of the card, by the estimate)"
        ),
        title_justify="left",
    )
    table.add_column("GPU")
    for stage, ckpt in _modes(stages):
        table.add_column(f"{stage}, checkpointing {'on' if ckpt else 'off'}", justify="right")
    for name, usable in cards:
        fits = [
            largest_batch(cfg, stage, arch, usable, ckpt, trained_tokens[stage], limit=BATCH_LIMIT)
            for stage, ckpt in _modes(stages)
        ]
        table.add_row(name, *("none" if n == 0 else f"{n}+" if n == BATCH_LIMIT else str(n) for n in fits))
    console.print(table)
    stage_cfgs = {stage: getattr(cfg.train, stage) for stage in stages}
    now = ", ".join(
        f"{stage} {sc.per_device_batch_size} x {sc.gradient_accumulation_steps}"
        for stage, sc in stage_cfgs.items()
    )
    console.print(
        f"  to fill a card, raise train.<stage>.per_device_batch_size and lower gradient_accumulation_steps so "
        f"their product, the effective batch, stays the same (now {now})",
        highlight=False,
    )


def _show_export(cfg: RunConfig, console: Console) -> None:
    """What `bbjtune export` will need in host RAM and disk for this config, and what this machine has."""

    arch = _architecture(cfg.model.source)
    if isinstance(arch, str):  # _show_memory said why
        return
    e = cfg.export
    ram = available_ram()
    free = free_disk(cfg.export_dir)

    sizing = ExportSizing(
        arch,
        list(e.gguf),
        e.kquant_source,
        e.lora_gguf,
        e.verify,
        merge_bytes=torch_dtype(cfg.model.dtype).itemsize,  # as the export stage counts it
        free=free,
        ram=ram,
    )
    keep, short = sizing.merged(e.merged)  # export.merged: auto decides on this machine as export will
    # a DoRA adapter falls back to the HF merge (export says so)
    estimate = functools.partial(sizing.estimate, keep=keep, streaming=not keep)
    est = estimate(kquant_source=configured_kquant_source(e.kquant_source))
    unit, scale = ("GiB", 2**30) if arch.params > 5e7 else ("MiB", 2**20)
    table = Table(
        title=f"export ({unit}, estimate): {'HF merge' if keep else 'streamed merge'}",
        title_justify="left",
    )
    table.add_column("file or step")
    table.add_column("disk", justify="right")
    table.add_column("host RAM", justify="right")
    for quant, size in est.files.items():
        table.add_row(f"{quant} GGUF", f"{size / scale:.1f}", "")
    for name, size in est.scratch.items():
        table.add_row(f"{name}, temporary", f"{size / scale:.1f}", "")
    if est.merged:
        table.add_row("merged/ safetensors", f"{est.merged / scale:.1f}", "")
    for step, need in est.ram.items():
        table.add_row(f"step: {step}", "", f"{need / scale:.1f}")
    table.add_row(
        "[bold]peak[/]", f"[bold]{est.disk_peak / scale:.1f}[/]", f"[bold]{est.ram_peak / scale:.1f}[/]"
    )
    console.print(table)
    verify = (
        ""
        if not e.verify
        else "; verification against the merged HF model"
        if est.verify_reference == "hf"
        else "; verification against the 16-bit GGUF (the HF model does not fit in this RAM)"
    )
    if short:
        console.print(f"  export.merged: auto → no merged/ on this machine: {short}", highlight=False)
    console.print(
        f"  this machine: {ram / 2**30:.1f} GiB RAM available, {free / 2**30:.1f} GiB "
        f"free for {cfg.export_dir}{verify}"
        + ("; export.merged: false streams the merge (no whole model in RAM)" if keep else "")
    )
    if e.kquant_source == "auto" and "f16 (llama.cpp's input)" in est.scratch:
        console.print(
            f"  where the disk is short, export quantizes from a q8_0 file instead of the f16 one: peak "
            f"{estimate(kquant_source='q8_0').disk_peak / scale:.1f} {unit} (export.kquant_source: auto)"
        )
    # what export itself would choose on this machine decides whether it would refuse
    est = sizing.routed(keep, not keep)[1]
    step, need = max(((k, v) for k, v in est.ram.items() if k != "verify"), key=lambda kv: kv[1])
    disk = est.disk_peak * DISK_MARGIN
    if need > ram or disk > free:
        console.print(
            "  [yellow]bbjtune export would refuse on this machine:[/] "
            + (
                "; ".join(
                    ([f"its {step} step needs {need / 2**30:.1f} GiB of RAM"] if need > ram else [])
                    + ([f"it needs {disk / 2**30:.1f} GiB of disk"] if disk > free else [])
                )
            )
        )
