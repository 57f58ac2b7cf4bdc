"""Host disk and RAM a training run needs, checked before a model is loaded.

Disk: stage 1 followed by stage 2 saves the merged stage-1 model (`cpt/merged/`, 16-bit: 2 bytes per
parameter), each self-training round saves the model it starts from (the same size; one at a time
with `train.keep_round_models: false`, and stage 1's merged model goes before the first with
`train.cpt.keep_merged: false`, see release.py), and every
stage keeps its adapter with checkpoints (LoRA weights plus their two Adam moments, 12 bytes per
LoRA parameter, `train.save_total_limit` of them). Host RAM: without a CUDA GPU the model trains on
the CPU, in the configured dtype (`auto` is float32 there); with a GPU the weights go to the GPU
and host RAM is not the limit, so it is not checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from bbjtune.config import SELF_TRAINING_STAGES, RunConfig
from bbjtune.errors import BbjtuneError
from bbjtune.models.architecture import Architecture
from bbjtune.sizing import available_ram, free_disk
from bbjtune.models.loading import find_architecture
from bbjtune.train.backends import local_rank, sharded_launch
from bbjtune.train.memory import estimate_for_config

GiB = 2**30
BASELINE_RAM = int(1.5 * GiB)


@dataclass
class TrainNeeds:
    disk: int
    ram: int | None  # None: the weights go to a GPU; host RAM is not checked
    parts: dict[str, int]


def lora_params(arch: Architecture, r: int) -> int:
    return arch.layers * sum(r * (a + b) for a, b in arch.linear_shapes().values())


def estimate_train(cfg: RunConfig, arch: Architecture, stages: list[str], cuda: bool) -> TrainNeeds:
    parts: dict[str, int] = {}
    n = arch.params
    merged = n * 2 if "cpt" in stages and "sft" in cfg.train_stages else 0
    rounds = sum(getattr(cfg.train, s).sampling.rounds for s in stages if s in SELF_TRAINING_STAGES)
    starts = (rounds if cfg.train.keep_round_models else min(rounds, 1)) * n * 2
    if merged and starts and not cfg.train.cpt.keep_merged:  # released before the first start is merged
        parts["cpt/merged, then one self-training start at a time (16-bit)"] = max(merged, starts)
    else:
        if merged:
            parts["cpt/merged (16-bit)"] = merged
        if starts:
            at_once = "" if cfg.train.keep_round_models or rounds == 1 else ", one at a time"
            parts[f"self-training start models{at_once}"] = starts
    adapter = lora_params(arch, cfg.train.lora.r) * 4
    parts["adapters and checkpoints"] = len(stages) * adapter * (1 + 3 * cfg.train.save_total_limit)
    ram = None
    if not cuda:
        dtype = cfg.model.dtype
        per_param = 2 if dtype in ("bfloat16", "float16") else 4
        ram = BASELINE_RAM + n * per_param + adapter * 4
    return TrainNeeds(disk=sum(parts.values()), ram=ram, parts=parts)


def check_train(
    cfg: RunConfig, arch: Architecture, stages: list[str], cuda: bool, *, free=None, ram=None
) -> TrainNeeds:
    """Refuse with one line when the run directory's disk, or the RAM of a CPU run, cannot take the run."""

    needs = estimate_train(cfg, arch, stages, cuda)
    free = free_disk(cfg.train_dir) if free is None else free
    if free < needs.disk * 1.05:
        parts = ", ".join(f"{k} {v / GiB:.1f}" for k, v in needs.parts.items())
        raise BbjtuneError(
            f"not enough disk space to train: about {needs.disk * 1.05 / GiB:.1f} GiB needed in "
            f"{cfg.train_dir} ({parts} GiB), {free / GiB:.1f} GiB free",
            "free space or set output_dir to a larger disk",
        )
    if needs.ram is not None:
        ram = available_ram() if ram is None else ram
        if ram < needs.ram:
            raise BbjtuneError(
                f"not enough RAM to train on the CPU: the {arch.params / 1e9:.2f}B model in "
                f"{cfg.model.dtype} needs about {needs.ram / GiB:.1f} GiB, {ram / GiB:.1f} GiB available",
                "train on a CUDA GPU, or choose a smaller model (model.source)",
            )
    return needs


def check_before_loading(cfg: RunConfig, stages: list[str], console) -> None:
    """The check `bbjtune train` runs before loading a model (skipped when the architecture is unknown)."""
    import torch

    arch = find_architecture(cfg.model.source)
    if arch is None:
        return
    needs = check_train(cfg, arch, stages, torch.cuda.is_available())
    if needs.disk > GiB:
        console.print(f"disk: about {needs.disk / GiB:.1f} GiB will be written under {cfg.train_dir}")


def show_train_disk(cfg: RunConfig, stages: list[str], console) -> None:
    """The dry run's line on what training writes to disk, part by part (nothing for an unknown architecture)."""
    arch = find_architecture(cfg.model.source)
    if arch is None:
        return
    needs = estimate_train(cfg, arch, stages, cuda=True)
    parts = "; ".join(f"{k} {v / GiB:.1f}" for k, v in needs.parts.items())
    console.print(
        f"disk: training writes about {needs.disk / GiB:.1f} GiB under {cfg.train_dir} ({parts} GiB), "
        f"{free_disk(cfg.train_dir) / GiB:.1f} GiB free there",
        highlight=False,
    )


# Share of a GPU's memory a stage may plan to fill, by the estimate: where `gradient_checkpointing: auto`
# turns checkpointing off, and the dry run's batch table. The estimate's error on the measured runs was -1%
# to +53% (benchmarks/RESULTS.md), almost always on the safe side, and the allocator needs room beyond
# torch's own count.
GPU_PLAN_SHARE = 0.85


def largest_batch(
    cfg: RunConfig,
    stage: str,
    arch: Architecture,
    usable: float,
    checkpointing: bool,
    trainable_tokens: int = 0,
    limit: int = 64,
) -> int:
    """The largest per-GPU batch (rows of the stage's max_length) whose estimate fits in
    GPU_PLAN_SHARE of `usable` bytes, up to `limit`; 0 when not even one row fits."""
    room = GPU_PLAN_SHARE * usable
    fits = 0
    for batch in range(1, limit + 1):  # the estimate grows with the batch
        need = estimate_for_config(
            cfg,
            stage,
            arch,
            batch=batch,
            gradient_checkpointing=checkpointing,
            trainable_tokens=trainable_tokens,
        ).total
        if need > room:
            break
        fits = batch
    return fits


def usable_gpu_memory(device: int | None = None) -> int | None:
    """The bytes a stage can use on a GPU (free memory plus what torch already holds), None without CUDA;
    `device` defaults to this process's own GPU in a multi-GPU launch."""
    import torch

    if not torch.cuda.is_available():
        return None
    device = local_rank() if device is None else device
    free, _total = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device)


def choose_checkpointing(
    cfg: RunConfig, stage: str, base_source: str, usable: int | None = None
) -> tuple[bool, str]:
    """Gradient checkpointing for one stage, and why: the config's true/false as given; `auto` is off
    when the stage's estimate without it (memory.estimate_for_config) fits in GPU_PLAN_SHARE of
    `usable` bytes of GPU memory (default: what this process can use on its GPU, free memory plus what
    torch already holds), else on.

    Checkpointing recomputes every layer's forward pass during the backward pass, about a third more
    compute for a fraction of the activation memory; where the card has room, keeping the activations
    trains faster. Without a CUDA GPU, under a sharded launch (FSDP, ZeRO-3), for a model whose
    architecture is unknown and for the self-training stages (a preference step holds two answers per
    example, which the estimate does not model) it stays on."""
    setting = cfg.train.gradient_checkpointing
    if setting != "auto":
        return bool(setting), "train.gradient_checkpointing"
    if stage not in ("cpt", "sft"):
        return True, "auto: only stages 1 and 2 are estimated"
    if usable is None:
        usable = usable_gpu_memory()
        if usable is None:
            return True, "auto: no CUDA GPU"
    if sharded_launch():
        return True, "auto: a sharded launch (FSDP, ZeRO-3)"
    arch = find_architecture(base_source)
    if arch is None:
        return True, "auto: the model's architecture is not known before loading"
    need = estimate_for_config(cfg, stage, arch, gradient_checkpointing=False).total
    room = GPU_PLAN_SHARE * usable
    verdict = "fits" if need <= room else "does not fit"
    return need > room, (
        f"auto: without it a step needs about {need / GiB:.1f} GiB, which {verdict} in "
        f"{100 * GPU_PLAN_SHARE:.0f}% of the {usable / GiB:.1f} GiB this GPU has free"
    )
