"""Where the model for training comes from: plain transformers + peft (`hf`) or Unsloth (`unsloth`).

Both backends hand the same trl `SFTTrainer` a model; they differ in how it is loaded and wrapped.

- `hf`: `bbjtune.models.load_model` (bitsandbytes nf4 for QLoRA), the LoRA config goes to the
  trainer, which wraps the model with peft. Portable: CPU, one GPU, `accelerate launch` (DDP, FSDP,
  DeepSpeed).
- `unsloth`: `FastLanguageModel.from_pretrained` + `FastLanguageModel.get_peft_model`, as Unsloth's
  documentation shows; Unsloth's fused kernels, its own gradient checkpointing and its padding-free
  batches (bbjtune keeps them: see `packing.install_collator`). Unsloth on its own trains a 7B QLoRA
  at 1.28x the plain HF+PEFT tokens/s in 0.38x the memory on one H200 (benchmarks/RESULTS.md). One
  CUDA GPU only; an optional extra (`pip install 'bbjtune[unsloth]'`), never required.

`backend: auto` picks Unsloth when it is importable and exactly one CUDA GPU trains.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from typing import Any

from bbjtune.config import RunConfig
from bbjtune.errors import BbjtuneError
from bbjtune.models import load_model, resolve_source
from bbjtune.models.loading import torch_dtype
from bbjtune.train.lora import wants_chat_token_training

# Qwen2's linear layers; peft's "all-linear" resolves to exactly these (lm_head excluded).
QWEN2_LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _launched_with(name: str) -> bool:
    """`accelerate launch` with FSDP or DeepSpeed sets ACCELERATE_USE_<NAME>=true for every process."""
    return os.environ.get(f"ACCELERATE_USE_{name}", "").lower() == "true"


def _zero3() -> bool:
    return _launched_with("DEEPSPEED") and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "") == "3"


def sharded_launch() -> bool:
    """True under `accelerate launch` with FSDP or DeepSpeed ZeRO-3, which place (shard) the weights themselves."""
    return _launched_with("FSDP") or _zero3()


def check_launch(cfg: RunConfig, stages: list[str]) -> None:
    """Stop before training on launches that cannot work, saying what to do instead of failing deep inside.

    FSDP and DeepSpeed place weights on GPUs, so they need some. Stage 2 on a Base model trains the
    chat-token rows of the embedding (peft's trainable tokens), which sharding handles only in part
    (each case seen on an H200, tiny model, QLoRA, torch 2.11, trl 1.15):
    - DeepSpeed ZeRO-3 fails: trl's fused LM head reads `lm_head.weight`, which peft computes for those
      rows instead of holding a ZeRO-3 parameter.
    - FSDP with fsdp_use_orig_params false fails: those rows and the frozen weights share an FSDP unit
      ("Must flatten tensors with uniform requires_grad"). With true, stage 2 trained on its own, while
      both stages in one launch failed in stage 2's forward.
    """

    fsdp = _launched_with("FSDP")
    chat_tokens = "sft" in stages and wants_chat_token_training(cfg) and not cfg.train.sft.train_embeddings
    if chat_tokens and _zero3():
        raise BbjtuneError(
            "DeepSpeed ZeRO-3 cannot train the chat-token rows that stage 2 trains on a Base model",
            "launch with configs/accelerate/fsdp_qlora.yaml (it shards the weights too), or with "
            "deepspeed_zero2.yaml or ddp.yaml when the model fits on one GPU; ZeRO-3 works for "
            "stage 1 (--stage cpt) and for Instruct models",
        )
    orig_params = os.environ.get("FSDP_USE_ORIG_PARAMS", "false").lower() in ("true", "1", "yes")
    if chat_tokens and fsdp and (not orig_params or "cpt" in stages):
        raise BbjtuneError(
            "under FSDP, stage 2 on a Base model (it trains the chat-token rows) needs "
            "fsdp_use_orig_params true and a launch of its own",
            "run stage 1 with the shipped config (add --stage cpt), then stage 2: accelerate launch "
            "--config_file configs/accelerate/fsdp_qlora.yaml --fsdp_use_orig_params true "
            "-m bbjtune train CONFIG --stage sft",
        )
    if (fsdp or _launched_with("DEEPSPEED")) and not cuda_available():
        raise BbjtuneError(
            f"{'FSDP' if fsdp else 'DeepSpeed'} training needs CUDA GPUs and none is visible",
            "on CPU, or to check a config quickly, use plain data parallel: torchrun "
            "--nproc_per_node 2 -m bbjtune train CONFIG (or accelerate launch with "
            "configs/accelerate/ddp.yaml on GPUs)",
        )


def unsloth_importable() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def use_one_gpu_unless_launched(console: Any = None) -> None:
    """Without `accelerate launch`, train on one GPU even when the machine has several.

    transformers would otherwise wrap the model in `nn.DataParallel`, which trl refuses. Must run
    before CUDA is initialised; the GPU count comes from NVML, which does not initialise it.
    """
    import torch

    if "WORLD_SIZE" in os.environ or "CUDA_VISIBLE_DEVICES" in os.environ or torch.cuda.device_count() <= 1:
        return
    if torch.cuda.is_initialized():
        raise BbjtuneError(
            f"{torch.cuda.device_count()} GPUs are visible and training was not started with "
            "accelerate launch",
            "set CUDA_VISIBLE_DEVICES=0, or use accelerate launch "
            "--config_file configs/accelerate/ddp.yaml -m bbjtune train CONFIG",
        )
    if console is not None:
        console.print(
            f"{torch.cuda.device_count()} GPUs visible: training on GPU 0 (for all of them: accelerate launch "
            "--config_file configs/accelerate/ddp.yaml -m bbjtune train CONFIG)"
        )
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"


def choose_backend(requested: str) -> str:
    """Resolve `auto`; check that an explicit `unsloth` can run here."""
    if requested == "hf":
        return "hf"
    single_gpu = world_size() == 1 and cuda_available()
    if requested == "auto":
        return "unsloth" if single_gpu and unsloth_importable() else "hf"
    if not unsloth_importable():
        raise BbjtuneError(
            "train.backend is 'unsloth' but Unsloth is not installed",
            "pip install 'bbjtune[unsloth]' on the GPU machine, or set train.backend: hf (or auto)",
        )
    if not single_gpu:
        raise BbjtuneError(
            "the unsloth backend trains on exactly one CUDA GPU",
            "set train.backend: hf for CPU or multi-GPU (accelerate launch) training",
        )
    return "unsloth"


def training_device_map(quantized: bool) -> Any:
    """Where the weights go at load time: each process's own GPU, or nowhere yet (CPU, FSDP, DeepSpeed)."""
    if not cuda_available() or sharded_launch():
        return None
    return {"": local_rank()} if quantized or world_size() > 1 else None


def load_hf(source: str, cfg: Any) -> Any:
    """A causal LM ready for peft: 16-bit, or 4-bit nf4 (QLoRA) when the config asks for it."""

    quantization = cfg.train.quantization if cfg.train.quantization.load_in_4bit else None
    return load_model(
        source,
        dtype=cfg.model.dtype,
        quantization=quantization,
        device_map=training_device_map(quantization is not None),
        attn_implementation=cfg.model.attn_implementation,
    )


def load_unsloth(
    source: str, cfg: Any, stage_cfg: Any, lora: dict[str, Any], checkpointing: bool = True
) -> Any:
    """The Unsloth path, as Unsloth documents it: FastLanguageModel + get_peft_model (LoRA applied)."""
    from unsloth import FastLanguageModel

    if lora.get("use_dora"):
        raise BbjtuneError(
            "the unsloth backend does not train DoRA adapters",
            "set train.lora.use_dora: false, or train.backend: hf",
        )
    src = resolve_source(source)
    name, extra = src.pretrained_args
    if extra:
        raise BbjtuneError(
            "the unsloth backend cannot load a .gguf file directly",
            "convert it to a model directory first, or use train.backend: hf",
        )
    model, _ = FastLanguageModel.from_pretrained(
        model_name=name,
        max_seq_length=stage_cfg.max_length,
        dtype=torch_dtype(cfg.model.dtype),
        load_in_4bit=cfg.train.quantization.load_in_4bit,
        full_finetuning=False,
    )
    lora = copy.deepcopy(lora)  # peft extends the lists it is given
    targets = lora["target_modules"]
    settings = dict(
        r=lora["r"],
        lora_alpha=lora["lora_alpha"],
        lora_dropout=lora["lora_dropout"],
        target_modules=QWEN2_LINEAR_MODULES if targets == "all-linear" else targets,
        bias="none",
        use_gradient_checkpointing="unsloth" if checkpointing else False,
        random_state=cfg.train.seed,
        use_rslora=lora["use_rslora"],
        modules_to_save=lora["modules_to_save"],
    )
    if lora.get("trainable_token_indices"):
        try:  # passed through to peft's LoraConfig by Unsloth versions that forward extra keywords
            return FastLanguageModel.get_peft_model(
                model, trainable_token_indices=lora["trainable_token_indices"], **settings
            )
        except TypeError as exc:
            if "trainable_token_indices" not in str(exc):
                raise
            raise BbjtuneError(
                "this Unsloth version cannot train the <|im_start|>/<|im_end|> rows a Base model needs",
                "set train.sft.train_chat_tokens: no (Unsloth then initialises untrained tokens "
                "itself), or train.backend: hf",
            ) from None
    return FastLanguageModel.get_peft_model(model, **settings)
