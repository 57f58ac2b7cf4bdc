"""How much GPU memory a training run needs, per GPU, before any weights are loaded.

The estimate adds up what lives on a GPU at the peak of a training step:

- weights: 16-bit (2 bytes per parameter), or nf4 for QLoRA: 0.5 byte per linear-layer weight
  plus the quantization constants (one 8-bit absmax per 64 weights and an fp32 per 256 blocks with
  double quantization, one fp32 per 64 without); embeddings, lm_head and norms stay 16-bit;
- LoRA: r x (in + out) parameters per adapted layer, in fp32 (bf16 under QLoRA, as trl casts
  them), plus their gradients and the optimizer's two states (fp32 for AdamW, ~1 byte each 8-bit);
  modules trained in full (`modules_to_save`) count like LoRA parameters;
- activations for batch x sequence tokens: with gradient checkpointing each layer keeps its
  input and one layer at a time is recomputed; without it every layer keeps its intermediates
  (attention via SDPA/flash-attention, so no sequence x sequence matrix);
- the output head: trl computes the loss in tiles without the full (tokens x vocabulary)
  logits; a plain transformers loss keeps bf16 logits plus their fp32 copy and gradient;
- an allowance for allocator fragmentation and small buffers (the CUDA context itself, ~0.5 GiB,
  is outside torch's count and outside this estimate).

Sharding divides what is sharded by the number of GPUs: ZeRO-2 the gradients and optimizer
states, ZeRO-3/FSDP the weights too. `benchmarks/compare_memory_estimate.py` puts the estimate
next to torch's measured peak.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from bbjtune.models.architecture import Architecture

GiB = 1024**3
Strategy = Literal["single", "ddp", "fsdp", "zero2", "zero3"]


@dataclass
class Estimate:
    weights: float
    adapter: float  # trainable parameters + gradients + optimizer states
    activations: float
    output_head: float
    overhead: float
    trainable_params: int
    strategy: str
    gpus: int

    @property
    def total(self) -> float:
        return self.weights + self.adapter + self.activations + self.output_head + self.overhead

    def as_gib(self) -> dict[str, float]:
        out = {k: round(v / GiB, 2) for k, v in asdict(self).items() if isinstance(v, float)}
        out["total"] = round(self.total / GiB, 2)
        return out


def estimate(
    arch: Architecture,
    *,
    batch: int,
    seq: int,
    quant_4bit: bool,
    double_quant: bool = True,
    weight_bytes: int = 2,
    lora_r: int = 32,
    target_modules: str | list[str] = "all-linear",
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    modules_to_save: list[str] | None = None,
    trainable_tokens: int = 0,
    optim: str = "adamw_torch",
    gradient_checkpointing: bool = True,
    fused_loss: bool = True,
    strategy: Strategy = "single",
    gpus: int = 1,
) -> Estimate:
    """Peak memory of one GPU for one training step, in bytes (see the module docstring)."""
    shapes = arch.linear_shapes()
    targets = list(shapes) if target_modules == "all-linear" else [t for t in target_modules if t in shapes]

    # weights
    if quant_4bit:
        per_weight = 0.5 + (1 / 64 + 4 / (64 * 256) if double_quant else 4 / 64)
        weights = arch.linear_params * per_weight + arch.other_params * 2
    else:
        weights = arch.params * weight_bytes

    # trainable parameters: LoRA (+ DoRA magnitudes) + full modules + token rows
    lora = arch.layers * sum(
        lora_r * (shapes[t][0] + shapes[t][1]) + (shapes[t][1] if use_dora else 0) for t in targets
    )
    full = sum(
        arch.vocab * arch.hidden
        for m in (modules_to_save or [])
        if m in ("embed_tokens", "lm_head") and not (m == "lm_head" and arch.tied)
    )
    tokens = trainable_tokens * arch.hidden * (1 if arch.tied else 2)
    trainable = lora + full + tokens
    param_bytes = 2 if quant_4bit else 4
    state_bytes = 2 if "8bit" in optim else 2 * param_bytes
    adapter = lora * (2 * param_bytes + state_bytes) + (full + tokens) * (2 * weight_bytes + 8)

    # activations (bf16/fp16 = 2 bytes; fp32 training = 4)
    a = weight_bytes if not quant_4bit else 2
    tokens_per_step = batch * seq
    h, i, kv = arch.hidden, arch.intermediate, arch.kv_dim
    per_layer = a * (7 * h + 4 * kv + 4 * i)
    if lora_dropout > 0:
        per_layer += (a + 1) * (6 * h + i)  # dropout outputs and masks of the adapted layers' inputs
    if gradient_checkpointing:
        activations = tokens_per_step * (arch.layers * a * h + per_layer)
    else:
        activations = tokens_per_step * arch.layers * per_layer

    # output head: tiles (trl, Liger, Unsloth) or the full logits (plain transformers loss)
    if fused_loss:  # trl: tiles of 4096 tokens x 32768 vocabulary entries (16-bit buffer + fp32 copies)
        output_head = min(tokens_per_step, 4096) * min(arch.vocab, 32768) * (2 + 4 + 4)
    else:
        output_head = tokens_per_step * arch.vocab * (2 + 4 + 4)

    # sharding
    n = max(gpus, 1) if strategy != "single" else 1
    if strategy in ("fsdp", "zero3"):
        weights = weights / n + max(a * b for a, b in shapes.values()) * 2 * len(shapes)  # one gathered layer
        adapter /= n
    elif strategy == "zero2":
        adapter = lora * param_bytes + (adapter - lora * param_bytes) / n

    overhead = 0.3 * GiB + 0.03 * (weights + adapter + activations + output_head)
    return Estimate(
        weights=float(weights),
        adapter=float(adapter),
        activations=float(activations),
        output_head=float(output_head),
        overhead=float(overhead),
        trainable_params=int(trainable),
        strategy=strategy,
        gpus=n,
    )


def estimate_for_config(
    cfg: Any,
    stage: str,
    arch: Architecture,
    *,
    trainable_tokens: int = 0,
    gradient_checkpointing: bool | None = None,
    strategy: Strategy = "single",
    gpus: int = 1,
    fused_loss: bool = True,
    batch: int | None = None,
) -> Estimate:
    """The estimate for one stage of a bbjtune config; `batch`: another per-GPU batch than the config's."""
    t = cfg.train
    sc = getattr(t, stage)
    weight_bytes = 4 if cfg.model.dtype == "float32" else 2
    modules = ["embed_tokens", "lm_head"] if sc.train_embeddings else None
    return estimate(
        arch,
        batch=sc.per_device_batch_size if batch is None else batch,
        seq=sc.max_length,
        quant_4bit=t.quantization.load_in_4bit,
        double_quant=t.quantization.double_quant,
        weight_bytes=weight_bytes,
        lora_r=t.lora.r,
        target_modules=t.lora.target_modules,
        lora_dropout=t.lora.dropout,
        use_dora=t.lora.use_dora,
        modules_to_save=modules,
        trainable_tokens=trainable_tokens,
        optim=t.optim,
        # `auto` is decided on the GPU when the stage starts (resources.choose_checkpointing); undecided, the
        # estimate assumes it on: `auto` turns it off only where the larger figure fits
        gradient_checkpointing=t.gradient_checkpointing is not False
        if gradient_checkpointing is None
        else gradient_checkpointing,
        fused_loss=fused_loss,
        strategy=strategy,
        gpus=gpus,
    )
