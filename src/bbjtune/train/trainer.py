"""trl's trainer for one stage: its arguments, callbacks, the run itself and its final metrics.

`cpt.py` and `sft.py` read top to bottom and call these builders; nothing here trains by itself.

Precision: `model.dtype` (auto: bf16 on a GPU that has it, float32 on CPU). With
`train.quantization.load_in_4bit` the frozen base weights are nf4 (+ double quantization) and
the LoRA weights train in bf16, as QLoRA prescribes.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console

from bbjtune.config import RunConfig
from bbjtune.errors import BbjtuneError
from bbjtune.models.architecture import Architecture
from bbjtune.models.loading import torch_dtype
from bbjtune.train.callbacks import GracefulStop, MetricsLog, RichProgress
from bbjtune.train.checkpoints import checkpoint_step, decide_resume, record_fingerprint
from bbjtune.train.job import STOP_HINT, StageJob, TrainingStopped, is_main_process
from bbjtune.train.lora import peft_config
from bbjtune.train.memory import GiB, estimate_for_config
from bbjtune.train.packing import install_collator

# ----------------------------------------------------------------------------- environment


def configure_torch(cfg: RunConfig) -> None:
    """CPU threads (tiny models train fastest on one) and quieter library logs."""
    import torch

    if cfg.train.cpu_threads and not torch.cuda.is_available():
        torch.set_num_threads(cfg.train.cpu_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # trl still passes the old argument names; the renames are transformers' business, not the user's
    warnings.filterwarnings(
        "ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def free_memory() -> None:
    """Give back what a finished trainer or sampler held (host and GPU) before the next model loads."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def precision(cfg: RunConfig) -> dict[str, bool]:
    """`bf16`/`fp16` mixed-precision switches for the trainer, from the model dtype."""
    import torch

    dtype = torch_dtype(cfg.model.dtype)
    if cfg.train.quantization.load_in_4bit and torch.cuda.is_available():
        dtype = torch_dtype(cfg.train.quantization.compute_dtype)
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def optimizer_name(cfg: RunConfig) -> str:
    """The optimizer; 8-bit AdamW needs bitsandbytes, and `paged` only means something on a GPU."""
    import torch

    optim = cfg.train.optim
    if "8bit" in optim and importlib.util.find_spec("bitsandbytes") is None:
        raise BbjtuneError(
            f"train.optim {optim} needs bitsandbytes, which is not installed",
            "pip install 'bbjtune[gpu]', or set train.optim: adamw_torch",
        )
    if optim == "paged_adamw_8bit" and not torch.cuda.is_available():
        return "adamw_8bit"
    if optim == "adamw_torch_fused" and not torch.cuda.is_available():
        return "adamw_torch"
    return optim


# ----------------------------------------------------------------------------- trl config


def common_arguments(job: StageJob) -> dict[str, Any]:
    """The TrainingArguments every trl config here shares (SFT for stages 1 and 2; DPO, KTO, GRPO)."""
    import torch

    sc, t = job.stage_cfg, job.cfg.train
    save_strategy, save_steps = ("steps", t.save_steps) if t.save_steps else ("epoch", None)
    return dict(
        output_dir=str(job.checkpoints_dir),
        use_cpu=not torch.cuda.is_available(),
        seed=t.seed,
        data_seed=t.seed,
        num_train_epochs=sc.epochs,
        max_steps=sc.max_steps,
        per_device_train_batch_size=sc.per_device_batch_size,
        gradient_accumulation_steps=sc.gradient_accumulation_steps,
        # a float below 1 is a share of the total steps in transformers 5 (its warmup_ratio is deprecated)
        learning_rate=sc.learning_rate,
        lr_scheduler_type=sc.lr_scheduler,
        warmup_steps=sc.warmup_ratio,
        weight_decay=sc.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=optimizer_name(job.cfg),
        **precision(job.cfg),
        gradient_checkpointing=job.checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if job.checkpointing else None,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        disable_tqdm=True,
        report_to="none",
        save_strategy=save_strategy,
        save_steps=save_steps,
        save_total_limit=t.save_total_limit,
        dataloader_num_workers=0,
    )


def training_arguments(job: StageJob, has_eval: bool, **stage_specific: Any):
    """trl's SFTConfig for either stage (CPT passes its text field and packing), from the bbjtune config."""
    from trl import SFTConfig

    cfg, sc, t = job.cfg, job.stage_cfg, job.cfg.train
    args = common_arguments(job)
    eval_strategy = ("steps" if t.eval_steps else "epoch") if has_eval else "no"
    early = bool(t.early_stopping_patience) and has_eval
    if early:  # the best checkpoint is chosen among evaluated ones: save exactly when evaluating
        args.update(save_strategy=eval_strategy, save_steps=t.eval_steps)
    report_to = [r for r in t.report_to if _reporter_available(r, job.console)]
    if "tensorboard" in report_to:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(cfg.train_dir / "tensorboard" / job.stage)
    args.update(
        per_device_eval_batch_size=sc.per_device_batch_size,
        # Unsloth applies its own (faster) gradient checkpointing when it wraps the model
        gradient_checkpointing=job.checkpointing and job.backend == "hf",
        report_to=report_to or "none",
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps if eval_strategy == "steps" else None,
        load_best_model_at_end=early,
        metric_for_best_model="eval_loss" if early else None,
        greater_is_better=False,
        max_length=sc.max_length,
        packing=sc.packing,
        use_liger_kernel=t.use_liger,
        ddp_find_unused_parameters=False if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        **stage_specific,
    )
    return SFTConfig(**args)


def _reporter_available(name: str, console: Console) -> bool:
    module = {"tensorboard": "tensorboard", "wandb": "wandb"}[name]
    if importlib.util.find_spec(module) is None:
        console.print(f"[yellow]note:[/] train.report_to lists {name}, which is not installed; skipping it")
        return False
    return True


# ----------------------------------------------------------------------------- the trainer


def make_trainer(
    job: StageJob,
    model: Any,
    tokenizer: Any,
    args: Any,
    train_dataset: Any,
    eval_dataset: Any,
    peft_settings: dict[str, Any] | None,
    callbacks: list[Any],
    embedding_lr: float | None = None,
):
    """trl's SFTTrainer, with a separate learning rate for trained embedding rows when asked."""
    from transformers import PrinterCallback, set_seed
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
            param_groups = [
                {
                    "params": params,
                    "weight_decay": self.args.weight_decay if has_decay else 0.0,
                    **({"lr": embedding_lr} if is_embedding else {}),
                }
                for (is_embedding, has_decay), params in groups.items()
            ]
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
            return self.optimizer

    # trl wraps the model in its LoRA adapter before transformers' Trainer seeds the run, so without
    # this the adapter's initial weights came from whatever random state earlier work left (a test that
    # trains after other tests learned a different model than the same test run alone).
    set_seed(args.seed)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=peft_config(peft_settings) if peft_settings else None,
    )
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


def stage_callbacks(job: StageJob, resume_from: Path | None) -> list[Any]:
    from transformers import EarlyStoppingCallback

    main = is_main_process()
    callbacks: list[Any] = [
        MetricsLog(
            job.metrics_path,
            job.stage,
            checkpoint_step(resume_from) if resume_from else None,
            main,
            job.round,
        ),
        RichProgress(job.stage, job.console, main),
    ]
    if job.cfg.train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=job.cfg.train.early_stopping_patience))
    return callbacks


def run_trainer(
    job: StageJob,
    model: Any,
    tokenizer: Any,
    args: Any,
    train_dataset: Any,
    eval_dataset: Any,
    peft_settings: Any,
) -> tuple[Any, dict[str, Any]]:
    """Build the trainer, train (resuming when there is a checkpoint) and return it with its final metrics."""
    resume_from = decide_resume(job)
    if resume_from is not None:
        job.console.print(
            f"{job.stage}: resuming from step {checkpoint_step(resume_from)} "
            f"(checkpoint {resume_from}); --restart starts over"
        )
    args.eval_on_start = eval_dataset is not None and resume_from is None  # the held-out loss before training
    trainer = make_trainer(
        job,
        model,
        tokenizer,
        args,
        train_dataset,
        eval_dataset,
        peft_settings,
        callbacks=stage_callbacks(job, resume_from),
        embedding_lr=job.stage_cfg.embedding_learning_rate,
    )
    record_fingerprint(job)
    train(trainer, job, resume_from)
    return trainer, final_metrics(trainer, eval_dataset is not None)


def train(trainer: Any, job: StageJob, resume_from: Path | None) -> Any:
    """Run trainer.train(); a stop request saves a checkpoint and raises TrainingStopped; running out
    of GPU memory becomes a BbjtuneError that says which settings to lower."""
    import torch

    stop = GracefulStop(job.console)
    trainer.add_callback(stop)
    stop.install()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except torch.OutOfMemoryError as exc:
        raise out_of_memory(job, trainer, exc) from None
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


def out_of_memory(job: StageJob, trainer: Any, exc: BaseException) -> BbjtuneError:
    """The stage ran out of GPU memory: where, what the dry run estimates, and what to lower, in the
    order that costs least (batch size with accumulation keeps the effective batch; checkpointing
    and 4-bit weights cost speed; a shorter max_length drops long examples)."""
    t, sc, stage = job.cfg.train, job.stage_cfg, job.stage
    step = trainer.state.global_step
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "out of memory"
    estimate = ""
    try:
        arch = Architecture.from_config(trainer.model.config)
        gib = estimate_for_config(job.cfg, stage, arch, gradient_checkpointing=job.checkpointing).total / GiB
        estimate = f"; the dry run estimates {gib:.1f} GiB per GPU for these settings"
    except Exception:  # noqa: BLE001 — the estimate only helps the message
        pass
    hints = []
    if sc.per_device_batch_size > 1:
        half = max(sc.per_device_batch_size // 2, 1)
        hints.append(
            f"set train.{stage}.per_device_batch_size: {half} (now {sc.per_device_batch_size}) and "
            f"train.{stage}.gradient_accumulation_steps: {sc.gradient_accumulation_steps * 2} "
            "(the same effective batch)"
        )
    if not job.checkpointing:
        hints.append("set train.gradient_checkpointing: true")
    if not t.quantization.load_in_4bit:
        hints.append("set train.quantization.load_in_4bit: true (QLoRA)")
    hints.append(f"lower train.{stage}.max_length (now {sc.max_length})")
    return BbjtuneError(
        f"{stage}: the GPU ran out of memory at step {step} ({first}){estimate}",
        "; or ".join(hints)
        + f". `bbjtune train CONFIG --dry-run` shows the estimate for new settings; checkpoints saved in "
        f"{job.checkpoints_dir} are kept, and the same command resumes from the last one",
    )


def final_metrics(trainer: Any, has_eval: bool) -> dict[str, Any]:
    """Last training loss, a final held-out evaluation, step counts."""
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    metrics: dict[str, Any] = {
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0.0, 3),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "train_tokens": getattr(trainer, "_total_train_tokens", None),
        "processes": trainer.args.world_size,  # >1 under accelerate launch
        "distributed": str(
            getattr(trainer.accelerator.distributed_type, "value", trainer.accelerator.distributed_type)
        ),
    }
    if has_eval:
        at_end = [
            h["eval_loss"] for h in history if "eval_loss" in h and h.get("step") == trainer.state.global_step
        ]
        metrics["eval_loss"] = at_end[-1] if at_end else trainer.evaluate()["eval_loss"]
        at_start = [h["eval_loss"] for h in history if "eval_loss" in h and h.get("step") == 0]
        metrics["first_eval_loss"] = at_start[0] if at_start else None
    return metrics
