"""The setup both recipes share: precision, LoRA, trl's `SFTConfig`, the trainer, checkpoints.

`cpt.py` and `sft.py` read top to bottom and call these builders; nothing here trains by itself.

Precision: `model.dtype` (auto: bf16 on a GPU that has it, float32 on CPU). With
`train.quantization.load_in_4bit` the frozen base weights are nf4 (+ double quantization) and
the LoRA weights train in bf16, as QLoRA prescribes. Checkpoints (adapter, optimizer,
scheduler, RNG states) are written to `<stage>/checkpoints/` every `save_steps` (default: each
epoch) and when the run is stopped with SIGTERM/Ctrl-C; `--resume` continues from the newest one
and ends with the same weights as a run that was never interrupted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from bbjtune.config import RunConfig, StageConfig
from bbjtune.errors import BbjtuneError
from bbjtune.models.chat_template import ENDOFTEXT, IM_END, IM_START
from bbjtune.train.packing import install_collator

STOP_HINT = "run the same command again to continue (it resumes from the checkpoint), or add --resume"


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on request after saving a checkpoint; the stage is incomplete."""


@dataclass
class StageJob:
    """One stage's run: what it trains, where it writes, how it was asked to start."""

    cfg: RunConfig
    stage: str                      # "cpt" or "sft"
    base_source: str                # the model the adapter is trained on
    backend: str                    # "hf" or "unsloth" (resolved)
    console: Console
    data_fingerprint: str = ""
    resume: str = "auto"            # "auto" | "always" | "never"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stage_cfg(self) -> StageConfig:
        return getattr(self.cfg.train, self.stage)

    @property
    def out_dir(self) -> Path:
        return self.cfg.train_dir / self.stage

    @property
    def checkpoints_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.out_dir / "adapter"

    @property
    def metrics_path(self) -> Path:
        return self.cfg.train_dir / "metrics.jsonl"

    def fingerprint(self) -> str:
        """Everything that decides this stage's result; a checkpoint is resumable only when it matches."""
        t = self.cfg.train
        settings = {
            "stage": self.stage, "base": self.base_source, "model": self.cfg.model.model_dump(mode="json"),
            "lora": t.lora.model_dump(mode="json"), "quantization": t.quantization.model_dump(mode="json"),
            "stage_cfg": self.stage_cfg.model_dump(mode="json"), "optim": t.optim, "seed": t.seed,
            "gradient_checkpointing": t.gradient_checkpointing, "backend": self.backend, "data": self.data_fingerprint,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- environment

def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def configure_torch(cfg: RunConfig) -> None:
    """CPU threads (tiny models train fastest on one) and quieter library logs."""
    import torch

    if cfg.train.cpu_threads and not torch.cuda.is_available():
        torch.set_num_threads(cfg.train.cpu_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    # trl still passes the old argument names; the renames are transformers' business, not the user's
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def precision(cfg: RunConfig) -> dict[str, bool]:
    """`bf16`/`fp16` mixed-precision switches for the trainer, from the model dtype."""
    import torch

    from bbjtune.models.loading import torch_dtype

    dtype = torch_dtype(cfg.model.dtype)
    if cfg.train.quantization.load_in_4bit and torch.cuda.is_available():
        dtype = torch_dtype(cfg.train.quantization.compute_dtype)
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def optimizer_name(cfg: RunConfig) -> str:
    """The optimizer; 8-bit AdamW needs bitsandbytes, and `paged` only means something on a GPU."""
    import importlib.util

    import torch

    optim = cfg.train.optim
    if "8bit" in optim and importlib.util.find_spec("bitsandbytes") is None:
        raise BbjtuneError(f"train.optim {optim} needs bitsandbytes, which is not installed",
                           "pip install 'bbjtune[gpu]', or set train.optim: adamw_torch")
    if optim == "paged_adamw_8bit" and not torch.cuda.is_available():
        return "adamw_8bit"
    if optim == "adamw_torch_fused" and not torch.cuda.is_available():
        return "adamw_torch"
    return optim


# ----------------------------------------------------------------------------- LoRA

def chat_token_ids(tokenizer: Any) -> list[int]:
    ids = [tokenizer.convert_tokens_to_ids(t) for t in (IM_START, IM_END)]
    if None in ids or tokenizer.unk_token_id in ids:
        raise BbjtuneError("the tokenizer has no <|im_start|>/<|im_end|> tokens", "bbjtune trains Qwen ChatML models")
    return ids


def lora_settings(cfg: RunConfig, model_config: Any, *, modules_to_save: list[str] | None = None,
                  trainable_tokens: list[int] | None = None) -> dict[str, Any]:
    """The LoRA configuration as plain keywords (peft's LoraConfig and Unsloth's get_peft_model take them).

    `trainable_tokens` trains just those rows of the embedding (and of lm_head when it is not tied
    to the embedding): the cheap way to teach a Base model `<|im_start|>`/`<|im_end|>`. Such an
    adapter must be merged before serving (vLLM and GGUF LoRA cannot load it); export does that.
    """
    lora = cfg.train.lora
    settings: dict[str, Any] = {
        "r": lora.r, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
        "target_modules": lora.target_modules, "use_rslora": lora.use_rslora, "use_dora": lora.use_dora,
        "bias": "none", "modules_to_save": modules_to_save or None, "trainable_token_indices": None,
    }
    tied = bool(getattr(model_config, "tie_word_embeddings", False))
    if trainable_tokens:
        settings["trainable_token_indices"] = (
            {"embed_tokens": trainable_tokens} if tied else {"embed_tokens": trainable_tokens, "lm_head": trainable_tokens})
    if modules_to_save and tied:
        settings["modules_to_save"] = [m for m in modules_to_save if m != "lm_head"]
        settings["ensure_weight_tying"] = True
    return settings


def peft_config(settings: dict[str, Any]):
    import copy

    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", **copy.deepcopy(settings))  # peft extends the lists it is given


# ----------------------------------------------------------------------------- trl config

def sft_config(job: StageJob, has_eval: bool, **stage_specific: Any):
    """trl's SFTConfig for one stage, from the bbjtune config."""
    import torch
    from trl import SFTConfig

    cfg, sc, t = job.cfg, job.stage_cfg, job.cfg.train
    eval_strategy = ("steps" if t.eval_steps else "epoch") if has_eval else "no"
    early = bool(t.early_stopping_patience) and has_eval
    save_strategy, save_steps = ("steps", t.save_steps) if t.save_steps else ("epoch", None)
    if early:  # the best checkpoint is chosen among evaluated ones: save exactly when evaluating
        save_strategy, save_steps = eval_strategy, t.eval_steps
    report_to = [r for r in t.report_to if _reporter_available(r, job.console)]
    if "tensorboard" in report_to:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(cfg.train_dir / "tensorboard" / job.stage)
    on_gpu = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(job.checkpoints_dir), use_cpu=not on_gpu, seed=t.seed, data_seed=t.seed,
        num_train_epochs=sc.epochs, max_steps=sc.max_steps,
        per_device_train_batch_size=sc.per_device_batch_size, per_device_eval_batch_size=sc.per_device_batch_size,
        gradient_accumulation_steps=sc.gradient_accumulation_steps,
        learning_rate=sc.learning_rate, lr_scheduler_type=sc.lr_scheduler, warmup_steps=sc.warmup_ratio,
        weight_decay=sc.weight_decay, max_grad_norm=t.max_grad_norm, optim=optimizer_name(cfg),
        **precision(cfg),
        # Unsloth applies its own (faster) gradient checkpointing when it wraps the model
        gradient_checkpointing=t.gradient_checkpointing and job.backend == "hf",
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        logging_steps=t.logging_steps, logging_first_step=True, disable_tqdm=True, report_to=report_to or "none",
        eval_strategy=eval_strategy, eval_steps=t.eval_steps if eval_strategy == "steps" else None,
        save_strategy=save_strategy, save_steps=save_steps, save_total_limit=t.save_total_limit,
        load_best_model_at_end=early, metric_for_best_model="eval_loss" if early else None, greater_is_better=False,
        max_length=sc.max_length, packing=sc.packing, use_liger_kernel=t.use_liger,
        dataloader_num_workers=0, ddp_find_unused_parameters=False if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        **stage_specific,
    )


def _reporter_available(name: str, console: Console) -> bool:
    import importlib.util

    module = {"tensorboard": "tensorboard", "wandb": "wandb"}[name]
    if importlib.util.find_spec(module) is None:
        console.print(f"[yellow]note:[/] train.report_to lists {name}, which is not installed; skipping it")
        return False
    return True


# ----------------------------------------------------------------------------- the trainer

def make_trainer(job: StageJob, model: Any, tokenizer: Any, args: Any, train_dataset: Any, eval_dataset: Any,
                 peft_settings: dict[str, Any] | None, callbacks: list[Any], embedding_lr: float | None = None):
    """trl's SFTTrainer, with a separate learning rate for trained embedding rows when asked."""
    from transformers import PrinterCallback
    from trl import SFTTrainer

    class Trainer(SFTTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            # trl counts one row per batch when there is no attention mask (its padding-free layout);
            # PackedRowsCollator batches several rows without a mask: count them all.
            before = self._total_train_tokens
            loss = super().compute_loss(model, inputs, *args, **kwargs)
            rows = inputs["input_ids"].shape[0]
            if model.training and "attention_mask" not in inputs and rows > 1:
                self._total_train_tokens = before + (self._total_train_tokens - before) * rows
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return loss

        def create_optimizer(self, model=None):
            if self.optimizer is not None or not embedding_lr:
                return super().create_optimizer(model)
            decay = set(self.get_decay_parameter_names(self.model))
            groups: dict[tuple[bool, bool], list[Any]] = {}
            for name, param in self.model.named_parameters():
                if param.requires_grad:
                    is_embedding = "modules_to_save" in name or "trainable_tokens" in name
                    groups.setdefault((is_embedding, name in decay), []).append(param)
            param_groups = [{"params": params, "weight_decay": self.args.weight_decay if has_decay else 0.0,
                             **({"lr": embedding_lr} if is_embedding else {})}
                            for (is_embedding, has_decay), params in groups.items()]
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
            return self.optimizer

    trainer = Trainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                      processing_class=tokenizer, callbacks=callbacks,
                      peft_config=peft_config(peft_settings) if peft_settings else None)
    trainer.remove_callback(PrinterCallback)  # RichProgress prints the logs
    _expose_output_head_bias(trainer.model)
    install_collator(trainer, args.packing, job.backend)
    return trainer


def _expose_output_head_bias(model: Any) -> None:
    """trl's fused LM head reads `lm_head.bias`; peft's trainable-token wrapper hides it. Give it back."""
    head = model.get_output_embeddings()
    if head is not None and not hasattr(head, "bias"):
        base = getattr(head, "original_module", None) or getattr(head, "base_layer", None)
        object.__setattr__(head, "bias", getattr(base, "bias", None))


# ----------------------------------------------------------------------------- checkpoints

FINGERPRINT_FILE = "fingerprint.json"


def last_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint (one whose trainer_state.json was written and parses)."""
    if not directory.is_dir():
        return None
    candidates = []
    for d in directory.glob("checkpoint-*"):
        suffix = d.name.rsplit("-", 1)[-1]
        if d.is_dir() and suffix.isdigit():
            try:
                json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            candidates.append((int(suffix), d))
    return max(candidates)[1] if candidates else None


def checkpoint_step(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])


def decide_resume(job: StageJob) -> Path | None:
    """The checkpoint to resume from, or None to start fresh (old checkpoints are then removed)."""
    found = last_checkpoint(job.checkpoints_dir)
    recorded = None
    fp_file = job.checkpoints_dir / FINGERPRINT_FILE
    if fp_file.exists():
        recorded = json.loads(fp_file.read_text(encoding="utf-8")).get("fingerprint")
    matches = found is not None and recorded == job.fingerprint()
    if job.resume == "always":
        if found is None:
            raise BbjtuneError(f"--resume: no checkpoint to resume in {job.checkpoints_dir}",
                               "run without --resume to start this stage")
        if not matches:
            raise BbjtuneError(f"--resume: the checkpoint in {job.checkpoints_dir} was made with other settings or data",
                               "resume with the settings it was made with, or add --restart to start over")
        return found
    if job.resume == "auto" and matches:
        return found
    wait_for_everyone()  # every process has looked before the old checkpoints go
    if is_main_process() and job.checkpoints_dir.exists():
        shutil.rmtree(job.checkpoints_dir)
    wait_for_everyone()
    return None


def record_fingerprint(job: StageJob) -> None:
    from bbjtune.artifacts import atomic_write_json

    if is_main_process():
        atomic_write_json(job.checkpoints_dir / FINGERPRINT_FILE, {"fingerprint": job.fingerprint()})


def train(trainer: Any, job: StageJob, resume_from: Path | None) -> Any:
    """Run trainer.train(); a stop request saves a checkpoint and raises TrainingStopped."""
    from bbjtune.train.callbacks import GracefulStop, RichProgress

    stop = GracefulStop(job.console)
    trainer.add_callback(stop)
    stop.install()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        stop.uninstall()
        for cb in trainer.callback_handler.callbacks:
            if isinstance(cb, RichProgress):
                cb.close()
    if stop.stopped_at is not None:
        message = f"{job.stage} stopped at step {stop.stopped_at}; checkpoint saved in {job.checkpoints_dir}"
        # Said here: the command line turns any KeyboardInterrupt into exit code 130 and drops its text.
        job.console.print(f"[yellow]{message}[/]\n{STOP_HINT}", highlight=False)
        raise TrainingStopped(message)
    return result


# ----------------------------------------------------------------------------- model, tokenizer, saving

def model_config(source: str):
    """The model's config.json (architecture), without loading weights."""
    from transformers import AutoConfig

    from bbjtune.models import resolve_source

    name, extra = resolve_source(source).pretrained_args
    return AutoConfig.from_pretrained(name, **extra)


def load_training_tokenizer(source: str):
    """The source's tokenizer with the ChatML template that carries the loss markers."""
    from bbjtune.errors import BbjtuneError
    from bbjtune.models import load_tokenizer
    from bbjtune.models.chat_template import install_training_template

    tokenizer = load_tokenizer(source)
    try:
        install_training_template(tokenizer)
    except ValueError:
        raise BbjtuneError(f"the tokenizer of {source} does not use Qwen's ChatML format",
                           "bbjtune trains Qwen2.5(-Coder) models; pick one as model.source") from None
    return tokenizer


def stage_callbacks(job: StageJob, resume_from: Path | None) -> list[Any]:
    from transformers import EarlyStoppingCallback

    from bbjtune.train.callbacks import MetricsLog, RichProgress

    main = is_main_process()
    callbacks: list[Any] = [
        MetricsLog(job.metrics_path, job.stage, checkpoint_step(resume_from) if resume_from else None, main),
        RichProgress(job.stage, job.console, main),
    ]
    if job.cfg.train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=job.cfg.train.early_stopping_patience))
    return callbacks


def run_trainer(job: StageJob, model: Any, tokenizer: Any, args: Any, train_dataset: Any, eval_dataset: Any,
                peft_settings: Any) -> tuple[Any, dict[str, Any]]:
    """Build the trainer, train (resuming when there is a checkpoint) and return it with its final metrics."""
    resume_from = decide_resume(job)
    if resume_from is not None:
        job.console.print(f"{job.stage}: resuming from step {checkpoint_step(resume_from)} "
                          f"(checkpoint {resume_from}); --restart starts over")
    args.eval_on_start = eval_dataset is not None and resume_from is None  # the held-out loss before training
    trainer = make_trainer(job, model, tokenizer, args, train_dataset, eval_dataset, peft_settings,
                           callbacks=stage_callbacks(job, resume_from),
                           embedding_lr=job.stage_cfg.embedding_learning_rate)
    record_fingerprint(job)
    train(trainer, job, resume_from)
    return trainer, final_metrics(trainer, eval_dataset is not None)


def final_metrics(trainer: Any, has_eval: bool) -> dict[str, Any]:
    """Last training loss, a final held-out evaluation, step counts."""
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    metrics: dict[str, Any] = {
        "steps": trainer.state.global_step, "epochs": round(trainer.state.epoch or 0.0, 3),
        "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
        "train_tokens": getattr(trainer, "_total_train_tokens", None),
        "processes": trainer.args.world_size,  # >1 under accelerate launch
        "distributed": str(getattr(trainer.accelerator.distributed_type, "value", trainer.accelerator.distributed_type)),
    }
    if has_eval:
        at_end = [h["eval_loss"] for h in history if "eval_loss" in h and h.get("step") == trainer.state.global_step]
        metrics["eval_loss"] = at_end[-1] if at_end else trainer.evaluate()["eval_loss"]
        at_start = [h["eval_loss"] for h in history if "eval_loss" in h and h.get("step") == 0]
        metrics["first_eval_loss"] = at_start[0] if at_start else None
    return metrics


def save_adapter(trainer: Any, tokenizer: Any, adapter_dir: Path, chat_model: bool) -> None:
    """Adapter, tokenizer and generation config, written beside the target then swapped in."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=".adapter.", dir=adapter_dir.parent))
    try:
        trainer.model.save_pretrained(tmp)
        saved_tokenizer = tokenizer
        generation = _generation_config(trainer.model, tokenizer, chat_model)
        if chat_model:  # like Qwen's Instruct models: a turn ends with <|im_end|>
            saved_tokenizer.eos_token = IM_END
        saved_tokenizer.save_pretrained(tmp)
        generation.save_pretrained(tmp)
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        tmp.rename(adapter_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _generation_config(model: Any, tokenizer: Any, chat_model: bool):
    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None) or GenerationConfig()
    config = GenerationConfig.from_dict(base.to_dict())
    endoftext = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    config.eos_token_id = [tokenizer.convert_tokens_to_ids(IM_END), endoftext] if chat_model else endoftext
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else endoftext
    return config
