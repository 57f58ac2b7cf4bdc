"""Training throughput: plain HF+PEFT, Unsloth as documented, and bbjtune's own SFT path, side by side.

Builds Qwen2.5-Coder architectures with random weights (speed does not depend on the values),
saves them once under --work-dir, then measures each row in its own process (Unsloth patches
libraries on import; a fresh process keeps every row honest):

  7b-lora     bf16 LoRA r=32 on all linear layers, batch 4 x 2048, gradient checkpointing, SDPA
  7b-qlora    the same on nf4 + double-quantized weights
  14b-qlora   the 14B architecture, QLoRA
  mix         7B LoRA on a realistic BBj length mix (conversations of 100-2000+ tokens): without
              packing each batch is padded to its longest conversation, bbjtune packs them; the
              figure that matters is useful (non-padding) tokens per second

Each group has these rows: (a) hf-peft: transformers + peft + Trainer, the plain baseline;
(b) unsloth: FastLanguageModel + get_peft_model + trl's SFTTrainer as Unsloth's docs show, and
unsloth-packed: the same with trl's packing on (Unsloth's own answer to mixed lengths, the fair peer
on the length mix); (c) bbjtune-hf, bbjtune-hf-liger (the hf backend with Liger's fused kernels,
`train.use_liger`) and (d) bbjtune-unsloth: bbjtune's SFT recipe (`bbjtune.train.trainer`) with each
backend; bbjtune-unsloth-auto is (d) with `train.gradient_checkpointing: auto` (checkpointing off
where the card holds the activations; the row records what it chose). Reported per row: tokens/s
(all tokens fed to the model, padding included), tokens/s at the median step, useful tokens/s,
MFU (model FLOPs utilisation: 6 x (linear + lm_head parameters) + 6 x layers x hidden x sequence
per token for the causal attention, over the GPU's dense bf16 peak), peak memory
(torch's max allocated), for bbjtune rows the memory estimate and its error, and the ratios to (a)
and to the best Unsloth row of its group. A row whose library is missing says "not available".

`--profile` records one step of every row with torch's profiler (the last warm-up step, so the
timed steps run unprofiled): the step's wall time, the
time the GPU (or, on a CPU, the operators) was busy and the rest (host gaps: Python, launches,
callbacks, data), the optimizer's share, and the 12 operators with the most self time; the summary
goes into the row (`profile`), the table into the worker's log.

    python benchmarks/train_throughput.py --out benchmarks/results/train_throughput.json
    python benchmarks/train_throughput.py --groups 7b-lora,mix --steps 8
    python benchmarks/train_throughput.py --smoke --out /tmp/smoke.json      # CPU, tiny sizes, seconds
    python benchmarks/train_throughput.py --groups 7b-qlora --paths unsloth,bbjtune-unsloth --profile

Prints a markdown table; writes every measurement as JSON to --out (after each row, so a run cut
short keeps what it measured) and each worker's output to --work-dir/logs/. BENCH_DEBUG=1 prints the
shapes, padding and packed examples of the first two batches of every row into those logs.
"""

# ruff: noqa: E402 — an Unsloth worker must import unsloth before the other imports (see below)
from __future__ import annotations

import sys

# Unsloth patches transformers, peft and trl when it is imported before them; imported later it warns
# "Unsloth should be imported before transformers" and runs without some of its patches (both Unsloth
# rows of the 2026-11 run printed that warning: this script imported bbjtune, and so transformers,
# first). A worker for an Unsloth row therefore imports it before anything else and records that it did.
UNSLOTH_FIRST: bool | None = None
if "--worker" in sys.argv[:-1] and "unsloth" in sys.argv[sys.argv.index("--worker") + 1]:
    UNSLOTH_FIRST = "transformers" not in sys.modules
    try:
        import unsloth  # noqa: F401, I001
    except ImportError:  # reported as "not available" by measure()
        UNSLOTH_FIRST = None

import argparse
import json
import math
import os
import random
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bbjtune.models.architecture import QWEN25, Architecture

# The published Qwen2.5-Coder shapes (models.architecture), plus a tiny one for --smoke on a CPU.
ARCHS = {
    "7b": QWEN25["7b"],
    "14b": QWEN25["14b"],
    "smoke": Architecture(hidden=64, intermediate=160, layers=2, heads=4, kv_heads=2, vocab=4096, tied=False),
}
GROUPS = {  # group: (architecture, 4-bit, workload)
    "7b-lora": ("7b", False, "full"),
    "7b-qlora": ("7b", True, "full"),
    "14b-qlora": ("14b", True, "full"),
    "mix": ("7b", False, "mix"),
}
PATHS = (
    "hf-peft",
    "unsloth",
    "unsloth-packed",
    "bbjtune-hf",
    "bbjtune-hf-liger",
    "bbjtune-unsloth",
    "bbjtune-unsloth-auto",
)
UNSLOTH_PATHS = ("unsloth", "unsloth-packed")  # Unsloth used directly
QWEN2_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
GiB = 1024**3


@dataclass
class Settings:
    batch: int = 4
    seq: int = 2048
    lora_r: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    steps: int = 15
    warmup: int = 5
    smoke: bool = False
    gradient_checkpointing: bool = True
    profile: bool = False


# ----------------------------------------------------------------------------- workloads


def bbj_length_mix(n: int, seq: int, rng: random.Random) -> list[int]:
    """Conversation lengths in tokens, shaped like BBj instruction data: most a few hundred tokens,
    a long tail of multi-screen programs (log-normal, median ~ seq/4, capped at seq)."""
    return [max(16, min(seq, int(rng.lognormvariate(math.log(seq / 4), 0.75)))) for _ in range(n)]


def token_rows(lengths: list[int], vocab: int, rng: random.Random) -> list[list[int]]:
    return [[rng.randrange(16, vocab) for _ in range(n)] for n in lengths]


def conversations_from_rows(rows: list[list[int]], tokenizer: Any) -> list[list[dict[str, str]]]:
    """ChatML conversations as long as the given token rows once the chat template is applied.

    Decoding random ids and encoding the text again merges some of them, so the answer is topped up
    with more ids until the templated conversation has at least the row's length (a full-length row
    is then cut to max_length by the trainer, exactly like the baseline's rows).
    """
    rng = random.Random(1)
    out = []
    for ids in rows:
        cut = max(8, len(ids) // 8)
        answer = list(ids[cut:])
        for _ in range(20):
            conv = [
                {"role": "system", "content": "You are a BBj expert."},
                {"role": "user", "content": tokenizer.decode(ids[:cut])},
                {"role": "assistant", "content": tokenizer.decode(answer)},
            ]
            short = len(ids) - len(
                tokenizer.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"]
            )
            if short <= 0:
                break
            answer += [rng.randrange(16, 4000) for _ in range(short)]
        out.append(conv)
    return out


# ----------------------------------------------------------------------------- model checkpoints


def make_checkpoint(arch: str, work_dir: Path, device: str) -> Path:
    """A random-weight Qwen2 checkpoint (bf16 safetensors) + a ChatML tokenizer, built once."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from bbjtune.models.tiny import build_tiny

    target = work_dir / f"qwen2.5-coder-{arch}-random"
    if (target / "config.json").exists():
        return target
    config = Qwen2Config(
        **ARCHS[arch].config_fields(),
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        use_sliding_window=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    with torch.device(device):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config).to(dtype)
    tmp = Path(tempfile.mkdtemp(prefix=".ckpt.", dir=work_dir))
    model.save_pretrained(tmp, max_shard_size="5GB")
    del model
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(build_tiny("tiny:test")).save_pretrained(tmp)  # ChatML specials; ids < 4096
    tmp.rename(target)
    return target


# ----------------------------------------------------------------------------- measuring


class Meter:
    """Times optimizer steps after warm-up; counts tokens fed and useful (non-padding) tokens."""

    def __init__(self, warmup: int, pad_id: int):
        self.warmup, self.pad_id = warmup, pad_id
        self.tokens = self.useful = 0
        self.pending_tokens = self.pending_useful = 0
        self.steps = 0
        self.t0: float | None = None
        self.elapsed = 0.0
        self.step_ms: list[float] = []  # every step, warm-up included: spread and outliers
        self.step_segments: list[int] = []  # examples per step: does a slow step come with a new layout?
        self.pending_segments = 0

    def count(self, batch: dict[str, Any]) -> None:
        """Called with each micro-batch as the model receives it."""
        ids = batch["input_ids"]
        if (
            os.environ.get("BENCH_DEBUG") and self.steps < 2
        ):  # what the model is fed: shapes, padding, packed segments
            pos = batch.get("position_ids")
            print(
                f"batch {self.steps}: "
                + ", ".join(f"{k} {tuple(v.shape)}" for k, v in batch.items() if hasattr(v, "shape"))
                + f"; pad {int((ids == self.pad_id).sum())}; segments {int((pos == 0).sum()) if pos is not None else '-'}"
                + (f"; mask sum {int(batch['attention_mask'].sum())}" if "attention_mask" in batch else ""),
                file=sys.stderr,
                flush=True,
            )
        self.pending_tokens += ids.numel()
        pos = batch.get("position_ids")
        self.pending_segments += int((pos == 0).sum()) if pos is not None else ids.shape[0]
        if "attention_mask" in batch:
            self.pending_useful += int(batch["attention_mask"].sum())
        else:
            self.pending_useful += int((ids != self.pad_id).sum())

    def median_rate(self) -> float | None:
        """Tokens per second at the median measured step (the mean tokens per step over its time):
        a one-off slow step does not move it, as it moves the mean."""
        timed = sorted(self.step_ms[self.warmup :])
        if not timed:
            return None
        return self.tokens / len(timed) / (timed[len(timed) // 2] / 1e3)

    def step_begin(self) -> None:
        _sync()
        self.t0 = time.perf_counter()

    def step_end(self) -> None:
        _sync()
        self.steps += 1
        took = time.perf_counter() - self.t0
        self.step_ms.append(round(took * 1e3, 1))
        self.step_segments.append(self.pending_segments)
        self.pending_segments = 0
        if self.steps > self.warmup:
            self.elapsed += took
            self.tokens += self.pending_tokens
            self.useful += self.pending_useful
        self.pending_tokens = self.pending_useful = 0


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def meter_callback(meter: Meter):
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            meter.step_begin()

        def on_step_end(self, args, state, control, **kwargs):
            meter.step_end()

    return _Callback()


def attach(trainer: Any, meter: Meter, profile: StepProfile | None = None) -> None:
    """Count the tokens of every micro-batch the trainer computes a loss on, and time its steps."""
    compute_loss = trainer.compute_loss

    def counted(model, inputs, *args, **kwargs):
        if model.training:
            meter.count(inputs)
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = counted
    trainer.add_callback(meter_callback(meter))
    if profile is not None:
        from transformers import TrainerCallback

        class _Profile(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                profile.begin()

            def on_step_end(self, args, state, control, **kwargs):
                profile.end()

        trainer.add_callback(_Profile())


class StepProfile:
    """torch.profiler around one optimizer step (the last warm-up step: not among the timed ones)."""

    def __init__(self, at_step: int):
        self.at, self.step = at_step, 0
        self.prof: Any = None
        self.t0 = 0.0
        self.summary: dict[str, Any] | None = None

    def begin(self) -> None:
        if self.step != self.at:
            return
        import torch

        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.prof = torch.profiler.profile(activities=activities)
        _sync()
        self.prof.start()
        self.t0 = time.perf_counter()

    def end(self) -> None:
        if self.prof is not None and self.step == self.at:
            _sync()
            wall = time.perf_counter() - self.t0
            self.prof.stop()
            self.summary = summarize_profile(self.prof, wall)
            self.prof = None
        self.step += 1


def summarize_profile(prof: Any, wall_s: float, top: int = 12) -> dict[str, Any]:
    """One profiled step: wall time, busy time (GPU kernels and copies; on a CPU, the operators' own
    time), the rest as host gaps, the optimizer's share, and the operators with the most self time."""
    import torch

    events = prof.key_averages()
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        device = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        busy_us = sum(e.self_device_time_total for e in device)
        ranked = sorted(device, key=lambda e: e.self_device_time_total, reverse=True)
        own = [(e.key, e.self_device_time_total, e.count) for e in ranked[:top]]
    else:
        cpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
        busy_us = sum(e.self_cpu_time_total for e in cpu)
        ranked = sorted(cpu, key=lambda e: e.self_cpu_time_total, reverse=True)
        own = [(e.key, e.self_cpu_time_total, e.count) for e in ranked[:top]]
    optimizer = [e for e in events if e.key.startswith("Optimizer.step")]
    host = sorted(
        (e for e in events if e.device_type == torch.autograd.DeviceType.CPU),
        key=lambda e: e.self_cpu_time_total,
        reverse=True,
    )
    wall_us = wall_s * 1e6
    summary = {
        "wall_ms": round(wall_s * 1e3, 2),
        "busy_ms": round(busy_us / 1e3, 2),
        "busy_share": round(min(busy_us / wall_us, 1.0), 4) if wall_us else None,
        "host_gap_ms": round(max(wall_us - busy_us, 0.0) / 1e3, 2),
        "optimizer_host_ms": round(sum(e.cpu_time_total for e in optimizer) / 1e3, 2),
        "optimizer_device_ms": round(sum(e.device_time_total for e in optimizer) / 1e3, 2)
        if on_gpu
        else None,
        "top": [
            {
                "name": name[:120],
                "ms": round(us / 1e3, 3),
                "share": round(us / busy_us, 4) if busy_us else None,
                "calls": n,
            }
            for name, us, n in own
        ],
        # where the host's time goes (Python-side operators, launches, syncs): the source of host gaps
        "top_host": [
            {"name": e.key[:120], "ms": round(e.self_cpu_time_total / 1e3, 3), "calls": e.count}
            for e in host[:top]
        ],
    }
    sort = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=25), file=sys.stderr, flush=True)
    if on_gpu:
        print(events.table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr, flush=True)
    return summary


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, float]:
    import resource

    import torch

    if torch.cuda.is_available():
        return {
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / GiB,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / GiB,
        }
    return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB}


def flops_per_token(arch: str, seq: int) -> float:
    a = ARCHS[arch]
    linear = a.linear_params + a.vocab * a.hidden  # every decoder linear layer and the lm_head
    return 6 * linear + 6 * a.layers * a.hidden * seq


def gpu_peak_flops() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name(0)
    return name, next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


# ----------------------------------------------------------------------------- the paths


@dataclass
class Job:
    """What a row's path trains on (a checkpoint, 4-bit or not, token rows) and what measures it."""

    ckpt: Path
    quant: bool
    rows: list[list[int]]
    s: Settings
    meter: Meter
    out_dir: Path
    profile: StepProfile | None = None

    def watch(self, trainer: Any) -> None:
        """Meter (and profile) the trainer's steps from a clean memory peak on."""
        attach(trainer, self.meter, self.profile)
        reset_peak()


def run_hf_peft(j: Job) -> None:
    """(a) The plain baseline: transformers model + peft LoRA + transformers Trainer, padding per batch."""
    ckpt, quant, rows, s, out_dir = j.ckpt, j.quant, j.rows, j.s, j.out_dir
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        BitsAndBytesConfig,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from bbjtune.models import load_tokenizer

    dtype = torch.float32 if s.smoke else torch.bfloat16
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": "sdpa"}
    if quant:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_quant_storage=torch.bfloat16,
        )
    if torch.cuda.is_available():
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(ckpt, **kwargs)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(
        model,
        LoraConfig(
            r=s.lora_r,
            lora_alpha=s.lora_alpha,
            lora_dropout=s.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    model.train()  # from_pretrained leaves eval mode, where checkpointing does nothing (DESIGN.md)
    tokenizer = load_tokenizer(str(ckpt))
    data = Dataset.from_list([{"input_ids": r, "labels": r} for r in rows])
    collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
    args = TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=s.batch,
        max_steps=s.warmup + s.steps,
        learning_rate=2e-4,
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        bf16=not s.smoke,
        use_cpu=s.smoke,
        optim="adamw_torch",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator)
    j.watch(trainer)
    trainer.train()


def run_unsloth(j: Job, packing: bool = False) -> None:
    """(b) Unsloth as its documentation shows: FastLanguageModel, get_peft_model, trl's SFTTrainer;
    `packing`: with trl's packing on, as Unsloth recommends for mixed lengths."""
    ckpt, quant, rows, s, out_dir = j.ckpt, j.quant, j.rows, j.s, j.out_dir
    from unsloth import FastLanguageModel  # noqa: I001 — before trl/transformers, as Unsloth requires
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(ckpt), max_seq_length=s.seq, dtype=None, load_in_4bit=quant
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=s.lora_r,
        target_modules=QWEN2_LINEAR,
        lora_alpha=s.lora_alpha,
        lora_dropout=s.lora_dropout,
        bias="none",
        use_gradient_checkpointing="unsloth",
        random_state=3407,
    )
    data = Dataset.from_list([{"input_ids": r} for r in rows])
    # gradient_accumulation_steps explicitly: Unsloth's SFTConfig defaults it to 2, the other paths use 1
    args = SFTConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=s.batch,
        max_steps=s.warmup + s.steps,
        gradient_accumulation_steps=1,
        learning_rate=2e-4,
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        bf16=True,
        optim="adamw_torch",
        max_length=s.seq,
        packing=packing,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=data, args=args)
    j.watch(trainer)
    trainer.train()


def run_bbjtune(j: Job, backend: str, liger: bool = False, auto: bool = False) -> dict[str, Any]:
    """(c, d) bbjtune's SFT recipe, with the given backend (and Liger's kernels on the hf backend), on the
    same tokens as ChatML conversations; `auto`: `train.gradient_checkpointing: auto` (off where the card
    has room for the activations)."""
    ckpt, quant, rows, s, out_dir = j.ckpt, j.quant, j.rows, j.s, j.out_dir
    if backend == "unsloth":
        import unsloth  # noqa: F401 — first, as Unsloth requires
    from rich.console import Console

    from bbjtune.config import validate_config
    from bbjtune.models import load_tokenizer
    from bbjtune.train import sft
    from bbjtune.train.job import StageJob
    from bbjtune.train.model_io import load_training_tokenizer
    from bbjtune.train.trainer import configure_torch, make_trainer, training_arguments
    from bbjtune.train.inputs import TrainingData
    from bbjtune.train.memory import estimate_for_config

    tokenizer = load_tokenizer(str(ckpt))
    cfg = validate_config(
        {
            "name": "bench",
            "output_dir": str(out_dir),
            "model": {
                "source": str(ckpt),
                "kind": "instruct",
                "dtype": "float32" if s.smoke else "bfloat16",
                "attn_implementation": "sdpa",
            },
            "data": {"chatml": ["-"], "output_dir": str(out_dir / "data")},
            "train": {
                "backend": backend,
                "use_liger": liger,
                "stages": "sft",
                "optim": "adamw_torch",
                "gradient_checkpointing": "auto" if auto else s.gradient_checkpointing,
                "lora": {"r": s.lora_r, "alpha": s.lora_alpha, "dropout": s.lora_dropout},
                "quantization": {"load_in_4bit": quant},
                "save_steps": 10**6,
                "logging_steps": 1000,
                "sft": {
                    "max_steps": s.warmup + s.steps,
                    "max_length": s.seq,
                    "per_device_batch_size": s.batch,
                    "gradient_accumulation_steps": 1,
                    "packing": True,
                    "learning_rate": 2e-4,
                },
            },
            "export": {"vllm": {"enabled": False}},
        }
    )
    configure_torch(cfg)
    job = StageJob(
        cfg=cfg,
        stage="sft",
        base_source=str(ckpt),
        backend=backend,
        console=Console(stderr=True, quiet=True),
        resume="never",
    )
    tok = load_training_tokenizer(job.base_source)
    model, peft_settings, _ = sft._setup_model(job, tok)
    data = TrainingData(conversations=conversations_from_rows(rows, tokenizer))
    train_dataset, _ = sft._setup_data(data)
    args = training_arguments(job, has_eval=False, assistant_only_loss=True, packing_strategy="bfd")
    trainer = make_trainer(job, model, tok, args, train_dataset, None, peft_settings, callbacks=[])
    j.watch(trainer)
    trainer.train()
    estimate = estimate_for_config(
        cfg, "sft", Architecture.from_config(model.config), gradient_checkpointing=job.checkpointing
    ).as_gib()
    return {"estimate_gib": estimate["total"], "gradient_checkpointing": job.checkpointing}


# ----------------------------------------------------------------------------- one row (worker process)


def measure(group: str, path: str, s: Settings, work_dir: Path) -> dict[str, Any]:
    arch, quant, workload = GROUPS[group]
    return measure_row(group, "smoke" if s.smoke else arch, quant, workload, path, s, work_dir)


def measure_row(
    group: str, arch: str, quant: bool, workload: str, path: str, s: Settings, work_dir: Path
) -> dict[str, Any]:
    import importlib.util

    import torch

    row: dict[str, Any] = {
        "group": group,
        "path": path,
        "arch": arch,
        "qlora": quant,
        "workload": workload,
        "batch": s.batch,
        "seq": s.seq,
        "lora_r": s.lora_r,
        "lora_dropout": s.lora_dropout,
        "gradient_checkpointing": s.gradient_checkpointing,
    }
    if "unsloth" in path:
        row["unsloth_imported_first"] = UNSLOTH_FIRST
    missing = [
        m
        for m, needed in (
            ("unsloth", "unsloth" in path),
            ("bitsandbytes", quant),
            ("liger_kernel", "liger" in path),
        )
        if needed and importlib.util.find_spec(m) is None
    ]
    if ("unsloth" in path or "liger" in path) and not torch.cuda.is_available():
        missing.append("a CUDA GPU")
    if missing:
        row["status"] = "not available (needs " + ", ".join(missing) + ")"
        return row
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ckpt = make_checkpoint(arch, work_dir, device)
    rng = random.Random(0)
    n = s.batch * (s.warmup + s.steps) * (4 if workload == "mix" else 1)
    lengths = bbj_length_mix(n, s.seq, rng) if workload == "mix" else [s.seq] * n
    rows = token_rows(lengths, 4000, rng)
    meter = Meter(s.warmup, pad_id=0)
    out_dir = Path(tempfile.mkdtemp(prefix=f"{group}-{path}-", dir=work_dir))
    from bbjtune.models import load_tokenizer

    meter.pad_id = load_tokenizer(str(ckpt)).pad_token_id
    # the last warm-up step: warm, and outside the timed steps, which the profiler would slow down
    profile = StepProfile(max(s.warmup - 1, 0)) if s.profile else None
    job = Job(ckpt, quant, rows, s, meter, out_dir, profile)
    try:
        extra = {}
        if path == "hf-peft":
            run_hf_peft(job)
        elif path in UNSLOTH_PATHS:
            run_unsloth(job, packing=path == "unsloth-packed")
        else:
            extra = run_bbjtune(
                job,
                "unsloth" if "unsloth" in path else "hf",
                liger=path.endswith("-liger"),
                auto=path.endswith("-auto"),
            )
    except Exception as exc:  # noqa: BLE001 — a failing row is reported, the others still run
        import traceback

        traceback.print_exc()
        row["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return row
    gpu, peak = gpu_peak_flops()
    row.update(
        status="ok",
        device=gpu,
        measured_steps=meter.steps - s.warmup,
        seconds=round(meter.elapsed, 3),
        step_ms=meter.step_ms,
        step_segments=meter.step_segments,
        median_step_tokens_per_s=meter.median_rate(),
        tokens_per_s=meter.tokens / meter.elapsed if meter.elapsed else None,
        useful_tokens_per_s=meter.useful / meter.elapsed if meter.elapsed else None,
        padding_share=1 - meter.useful / meter.tokens if meter.tokens else None,
        **peak_memory(),
        **extra,
    )
    if profile is not None:
        row["profile"] = profile.summary
    if peak and row["useful_tokens_per_s"]:
        row["mfu"] = row["useful_tokens_per_s"] * flops_per_token(arch, s.seq) / peak
    if "estimate_gib" in row and "peak_allocated_gib" in row:
        row["estimate_error"] = row["estimate_gib"] / row["peak_allocated_gib"] - 1
    return row


# ----------------------------------------------------------------------------- orchestration


def run_row(group: str, path: str, s: Settings, work_dir: Path, timeout: int) -> dict[str, Any]:
    """Measure one row in a fresh process (Unsloth patches libraries globally)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result_file = Path(fh.name)
    cmd = (
        [
            sys.executable,
            __file__,
            "--worker",
            f"{group}:{path}",
            "--work-dir",
            str(work_dir),
            "--json",
            str(result_file),
            "--steps",
            str(s.steps),
            "--warmup",
            str(s.warmup),
            "--batch",
            str(s.batch),
            "--seq",
            str(s.seq),
            "--lora-dropout",
            str(s.lora_dropout),
        ]
        + (["--smoke"] if s.smoke else [])
        + (["--profile"] if s.profile else [])
    )
    t0 = time.time()
    try:
        env = {
            **os.environ,
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0"),
        }  # one GPU per row
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        log = work_dir / "logs" / f"{group}-{path}.log"  # the worker's full output, for a failing row
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout + proc.stderr)
        if result_file.exists() and result_file.stat().st_size:
            row = json.loads(result_file.read_text())
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            row = {"group": group, "path": path, "status": f"failed: exit {proc.returncode}: {tail[0][:200]}"}
    except subprocess.TimeoutExpired:
        row = {"group": group, "path": path, "status": f"failed: timed out after {timeout} s"}
    finally:
        result_file.unlink(missing_ok=True)
    row["wall_s"] = round(time.time() - t0, 1)
    print(f"  {group:10s} {path:16s} {row.get('status')}  ({row['wall_s']} s)", file=sys.stderr, flush=True)
    return row


def versions() -> dict[str, str | None]:
    """The libraries each row ran with (read from their metadata; nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in (
        "torch",
        "transformers",
        "peft",
        "trl",
        "accelerate",
        "bitsandbytes",
        "unsloth",
        "unsloth_zoo",
        "liger_kernel",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def ratio(row: dict[str, Any], ref: dict[str, Any] | None, key: str) -> str:
    if not ref or ref.get("status") != "ok" or row.get("status") != "ok" or not ref.get(key):
        return "–"
    return f"{row[key] / ref[key]:.2f}x"


def markdown(rows: list[dict[str, Any]]) -> str:
    mem_key = "peak_allocated_gib" if any("peak_allocated_gib" in r for r in rows) else "peak_rss_gib"
    lines = [
        "| group | path | tokens/s | at the median step | useful tokens/s | MFU | peak memory GiB "
        "| estimate GiB (error) | vs (a) hf-peft | vs best Unsloth row |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['group']} | {r['path']} | {r.get('status')} | | | | | | | |")
            continue
        same = {x["path"]: x for x in rows if x["group"] == r["group"]}
        unsloth_ok = [same[p] for p in UNSLOTH_PATHS if same.get(p, {}).get("status") == "ok"]
        best_unsloth = max(unsloth_ok, key=lambda x: x["useful_tokens_per_s"] or 0, default=None)
        est = (
            f"{r['estimate_gib']:.1f} ({100 * r['estimate_error']:+.0f}%)"
            if "estimate_error" in r
            else f"{r['estimate_gib']:.1f}"
            if "estimate_gib" in r
            else "–"
        )
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "–"
        median = f"{r['median_step_tokens_per_s']:,.0f}" if r.get("median_step_tokens_per_s") else "–"
        path = r["path"] + (" (checkpointing off)" if r.get("gradient_checkpointing") is False else "")
        lines.append(
            f"| {r['group']} | {path} | {r['tokens_per_s']:,.0f} | {median} | {r['useful_tokens_per_s']:,.0f} | {mfu} "
            f"| {r[mem_key]:.1f} | {est} | {ratio(r, same.get('hf-peft'), 'useful_tokens_per_s')} "
            f"| {ratio(r, best_unsloth, 'useful_tokens_per_s')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--groups", default=",".join(GROUPS), help=f"comma-separated, from {', '.join(GROUPS)}"
    )
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, from {', '.join(PATHS)}")
    parser.add_argument("--steps", type=int, default=15, help="measured optimizer steps per row")
    parser.add_argument(
        "--warmup",
        type=int,
        default=5,
        help="steps before measuring (compilation, allocator); on 2026-12-07 a one-off 2.2 s step (the "
        "others took 0.76 s) fell at the third step of a 7B row, so 2 warm-up steps were too few",
    )
    parser.add_argument("--batch", type=int, default=None, help="rows per step (default 4; smoke 2)")
    parser.add_argument("--seq", type=int, default=None, help="tokens per row (default 2048; smoke 128)")
    parser.add_argument(
        "--lora-dropout",
        type=float,
        default=0.0,
        help="LoRA dropout on every path (default 0; the presets train with 0.05, which Unsloth runs unfused)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="CPU-sized architecture: checks the script, not speed"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "bbjtune-bench",
        help="random-weight checkpoints are written here once (7B: 15 GB, 14B: 30 GB)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON file for all measurements")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per row")
    parser.add_argument(
        "--profile", action="store_true", help="profile the last warm-up step of every row (torch profiler)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    a = parser.parse_args()
    s = Settings(
        batch=a.batch or (2 if a.smoke else 4),
        seq=a.seq or (128 if a.smoke else 2048),
        lora_dropout=a.lora_dropout,
        steps=a.steps,
        warmup=a.warmup,
        smoke=a.smoke,
        profile=a.profile,
    )
    a.work_dir.mkdir(parents=True, exist_ok=True)
    if a.worker:
        group, path = a.worker.split(":")
        a.json.write_text(json.dumps(measure(group, path, s, a.work_dir), default=str))
        return
    groups = [g for g in a.groups.split(",") if g]
    paths = [p for p in a.paths.split(",") if p]
    unknown = [g for g in groups if g not in GROUPS] + [p for p in paths if p not in PATHS]
    if unknown:
        parser.error(f"unknown group/path: {', '.join(unknown)}")
    print(f"measuring {len(groups) * len(paths)} rows (each in its own process)...", file=sys.stderr)
    from bbjtune.artifacts import atomic_write_json

    command = "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:])
    rows: list[dict[str, Any]] = []
    result = {"settings": asdict(s), "command": command, "versions": versions(), "rows": rows}
    for g in groups:
        for p in paths:
            rows.append(run_row(g, p, s, a.work_dir, a.timeout))
            if a.out:  # after every row, so a run cut short keeps what it measured
                atomic_write_json(a.out, result)
    header = (
        f"Training throughput — {datetime.now(timezone.utc).strftime('%Y-%m-%d')}, `{command}`, "
        f"batch {s.batch} x {s.seq}, LoRA r={s.lora_r} dropout {s.lora_dropout:g} all linear, "
        "gradient checkpointing (where a row does not say it is off), SDPA, "
        f"{s.steps} measured steps after {s.warmup} warm-up"
    )
    print(header + "\n\n" + markdown(rows))


if __name__ == "__main__":
    main()
