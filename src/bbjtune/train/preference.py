"""Preference optimisation and GRPO on the checker's verdicts, through trl.

- DPO (`DPOTrainer`): pairs of a passing and a failing answer to the same prompt. The policy is a
  fresh LoRA adapter on the round's start model; the reference is that model with the adapter
  switched off, so no second copy of the weights is loaded.
- KTO (`KTOTrainer`): unpaired answers labelled good or bad. `train.dpo.loss: auto` picks it when
  fewer than `min_pairs` pairs were built — typical when the model passes almost always or almost
  never, so few prompts have both kinds of answer (KTO needs no partner).
- GRPO (`GRPOTrainer`, `train.stages: [..., grpo]`): the model samples while it trains and
  `verdict.judge(...).reward` scores each answer; the slow option, as it generates inside the loop.

ORPO is left out: in trl 1.16 it lives under trl.experimental, without the stability promise of
the trainers used here.
"""

from __future__ import annotations

import os
from typing import Any

from bbjtune.errors import BbjtuneError
from bbjtune.train import backends
from bbjtune.train.checkpoints import decide_resume, record_fingerprint
from bbjtune.train.job import StageJob, is_main_process
from bbjtune.train.lora import lora_settings, peft_config
from bbjtune.train.model_io import load_training_tokenizer, save_adapter
from bbjtune.train.samples import training_prompts
from bbjtune.train.trainer import common_arguments, final_metrics, stage_callbacks, train
from bbjtune.train.verdict import judge


def choose_loss(loss: str, pairs: int, min_pairs: int) -> str:
    """DPO when there are enough pairs, else KTO (for `loss: auto`)."""
    if loss != "auto":
        return loss
    return "dpo" if pairs >= min_pairs else "kto"


def _setup(job: StageJob) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenizer, 16-bit or 4-bit start model, LoRA settings (a fresh adapter on the start model)."""
    tokenizer = load_training_tokenizer(job.base_source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = backends.load_hf(job.base_source, job.cfg)  # trl's preference trainers wrap plain HF models
    lora = lora_settings(job.cfg, model.config)
    return tokenizer, model, lora


def run_preference(
    job: StageJob, pairs: list[dict[str, Any]], unpaired: list[dict[str, Any]]
) -> dict[str, Any]:
    """Train DPO (or KTO) on the round's data; save `adapter/`; returns metrics and LoRA settings."""
    from datasets import Dataset

    sc = job.stage_cfg
    loss = choose_loss(sc.loss, len(pairs), sc.min_pairs)
    if loss == "dpo" and not pairs:
        raise BbjtuneError(
            "dpo: no pair of a passing and a failing answer was built",
            "set train.dpo.loss: auto (KTO then uses unpaired answers) or sample more answers",
        )
    if loss == "kto" and not {u["label"] for u in unpaired} >= {True, False}:
        raise BbjtuneError(
            "kto: needs both passing and failing answers, and the samples have only one kind",
            "sample more answers per prompt (sampling.samples_per_prompt) or at a higher temperature",
        )
    job.console.print(
        f"{job.stage}: {loss.upper()} on {len(pairs) if loss == 'dpo' else len(unpaired)} examples "
        f"({len(pairs)} pairs built; train.dpo.loss {sc.loss})"
    )
    tokenizer, model, lora = _setup(job)
    if loss == "dpo":
        from trl import DPOConfig, DPOTrainer

        mix = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, sc.sft_weight]} if sc.sft_weight else {}
        args = DPOConfig(**common_arguments(job), beta=sc.beta, max_length=sc.max_length, **mix)
        trainer_cls, dataset = DPOTrainer, Dataset.from_list(pairs)
    else:
        from trl import KTOConfig, KTOTrainer

        args = KTOConfig(**common_arguments(job), beta=sc.beta, max_length=sc.max_length)
        trainer_cls, dataset = KTOTrainer, Dataset.from_list(unpaired)
    metrics = _train_and_save(job, trainer_cls, model, tokenizer, args, dataset, lora)
    metrics["loss_type"] = f"{loss}+sft" if loss == "dpo" and sc.sft_weight else loss
    return {"metrics": metrics, "lora": lora}


def run_grpo(job: StageJob, data: Any) -> dict[str, Any]:
    """GRPO on the training prompts with the checker's reward; save `adapter/`."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    sc, sampling = job.stage_cfg, job.stage_cfg.sampling
    prompts = training_prompts(job.cfg, data.conversations, sampling).prompts
    dataset = Dataset.from_list([{"prompt": p.context, "must": p.must} for p in prompts])

    def checker_reward(
        prompts: list[Any], completions: list[Any], must: list[list[str]], **_: Any
    ) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [
            judge(t, m, compiler=sampling.compiler, min_pattern_share=sampling.min_pattern_share).reward
            for t, m in zip(texts, must)
        ]

    tokenizer, model, lora = _setup(job)
    args = GRPOConfig(
        **common_arguments(job),
        beta=sc.beta,
        num_generations=sampling.samples_per_prompt,
        max_completion_length=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
    )
    metrics = _train_and_save(
        job, GRPOTrainer, model, tokenizer, args, dataset, lora, reward_funcs=[checker_reward]
    )
    return {"metrics": metrics, "lora": lora}


def _train_and_save(
    job: StageJob,
    trainer_cls: Any,
    model: Any,
    tokenizer: Any,
    args: Any,
    dataset: Any,
    lora: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """Build the trl trainer, train (resuming a matching checkpoint), save `adapter/`; returns the metrics."""
    from transformers import PrinterCallback

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    resume_from = decide_resume(
        job
    )  # before the callbacks: metrics.jsonl keeps the lines up to the checkpoint
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(lora),
        callbacks=stage_callbacks(job, resume_from),
        **extra,
    )
    trainer.remove_callback(PrinterCallback)
    record_fingerprint(job)
    train(trainer, job, resume_from)
    if is_main_process():
        save_adapter(trainer, tokenizer, job.adapter_dir, chat_model=True)
    history = trainer.state.log_history
    metrics = final_metrics(trainer, has_eval=False)
    for key in ("rewards/margins", "rewards/chosen", "rewards/rejected", "reward", "kl"):
        values = [h[key] for h in history if key in h]
        if values:
            metrics[key.replace("/", "_") + "_first"] = values[0]
            metrics[key.replace("/", "_") + "_last"] = values[-1]
    return metrics
