"""Stage 2, instruction tuning (SFT): teach the model to answer BBj requests in ChatML.

Reads `train.jsonl` (and `heldout.jsonl` for the evaluation loss; `replay.jsonl`, general coding
conversations, makes up `train.sft.replay_ratio` of the examples when the data stage wrote one),
trains a fresh LoRA adapter on the 16-bit model from stage 1 (`cpt/merged`) or on the original
model (Instruct models, or a Base model trained by SFT alone) and writes `sft/adapter/`.

- Loss: only the assistant answers count, each including its closing `<|im_end|>` (the chat
  template's `{% generation %}` markers tell trl which tokens those are), so the model learns to
  answer and to stop; system and user turns are context only.
- Packing: conversations are packed into rows of `max_length` tokens (best-fit decreasing) with
  position ids restarting at 0 for each conversation; attention never crosses from one
  conversation into another (transformers builds a block-diagonal mask from the position ids, or
  flash-attention uses them directly), and the first token of each conversation is never a target
  of the previous one's last token.
- Base models: the `<|im_start|>`/`<|im_end|>` embedding rows were never trained; with
  `train.sft.train_chat_tokens: auto` (or yes) exactly those rows train too (peft
  `trainable_token_indices`; the adapter must then be merged before serving, which export does).
- Stopping: the saved tokenizer ends turns with `<|im_end|>` and the generation config stops on
  `<|im_end|>` and `<|endoftext|>`.
- Learning rate ~5e-5 with warmup and cosine decay; effective batch = per-device batch x
  gradient accumulation x GPUs.
"""

from __future__ import annotations

from typing import Any

from bbjtune.models.loading import model_config
from bbjtune.models.chat_template import ENDOFTEXT, IM_END
from bbjtune.train import backends
from bbjtune.train.inputs import TrainingData
from bbjtune.train.job import StageJob, is_main_process, wait_for_everyone
from bbjtune.train.lora import chat_token_ids, lora_settings, wants_chat_token_training
from bbjtune.train.model_io import load_training_tokenizer, save_adapter
from bbjtune.train.trainer import run_trainer, training_arguments


def run_sft(job: StageJob, data: TrainingData) -> dict[str, Any]:
    """Train stage 2 and save `sft/adapter/`; returns the final metrics."""
    tokenizer = load_training_tokenizer(job.base_source)
    model, peft_settings, lora = _setup_model(job, tokenizer)
    replay = data.replay_sample(job.stage_cfg.replay_ratio, job.cfg.train.seed)
    if replay:
        job.console.print(data.describe_replay(len(replay), job.stage_cfg.replay_ratio))
    train_dataset, eval_dataset = _setup_data(data, replay)
    args = training_arguments(
        job,
        has_eval=eval_dataset is not None,
        assistant_only_loss=job.stage_cfg.assistant_only_loss,
        packing_strategy="bfd",
    )
    trainer, metrics = run_trainer(job, model, tokenizer, args, train_dataset, eval_dataset, peft_settings)
    if is_main_process():
        save_adapter(trainer, tokenizer, job.adapter_dir, chat_model=True)
        metrics["stop_check"] = stop_check(trainer.model, tokenizer, data, job.stage_cfg.stop_check)
    wait_for_everyone()
    return {"metrics": metrics, "lora": lora}


def _setup_model(job: StageJob, tokenizer: Any) -> tuple[Any, dict[str, Any] | None, dict[str, Any]]:
    checkpointing = job.checkpointing  # decided (and said) before the model takes GPU memory
    architecture = model_config(job.base_source)
    if job.stage_cfg.train_embeddings:  # whole embedding (chat-token rows included) and lm_head
        lora = lora_settings(job.cfg, architecture, modules_to_save=["embed_tokens", "lm_head"])
    else:
        tokens = chat_token_ids(tokenizer) if wants_chat_token_training(job.cfg) else None
        lora = lora_settings(job.cfg, architecture, trainable_tokens=tokens)
    if job.backend == "unsloth":
        return (
            backends.load_unsloth(job.base_source, job.cfg, job.stage_cfg, lora, checkpointing),
            None,
            lora,
        )
    return backends.load_hf(job.base_source, job.cfg), lora, lora


def _setup_data(data: TrainingData, replay: list[list[dict[str, str]]] | None = None):
    """The training set (BBj conversations plus the replay sample; trl shuffles them) and the held-out set."""
    from datasets import Dataset

    train = Dataset.from_list([{"messages": c} for c in [*data.conversations, *(replay or [])]])
    heldout = Dataset.from_list([{"messages": c} for c in data.heldout]) if data.heldout else None
    return train, heldout


def stop_check(model: Any, tokenizer: Any, data: TrainingData, n: int) -> dict[str, Any] | None:
    """Answer `n` held-out requests greedily: does each answer end with <|im_end|> before running long?

    A Base model that never learnt to stop rambles until max_new_tokens; this catches it here,
    not at evaluation. Each answer may take 1.5x its reference length plus 16 tokens. The requests
    go in one batch: a 3-step 7B stage 2 took 239 s, 35 s of it training; four 400-650-token answers one
    after another and loading the model shared the rest (not timed apart)."""
    import torch

    conversations = [c for c in (data.heldout or data.conversations) if c[-1]["role"] == "assistant"][:n]
    if not conversations:
        return None
    if (
        backends.world_size() > 1 or backends.sharded_launch()
    ):  # generation needs whole, unwrapped weights in one process
        return {
            "skipped": "the model was trained in several processes or with sharded weights; "
            "`bbjtune eval` on the result shows whether its answers stop"
        }
    stop_ids = tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT])
    budgets = [
        min(int(1.5 * len(tokenizer(c[-1]["content"])["input_ids"])) + 16, 2048) for c in conversations
    ]
    texts = [
        tokenizer.apply_chat_template(c[:-1], add_generation_prompt=True, tokenize=False)
        for c in conversations
    ]
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # one batch: every answer starts right after its prompt
    try:
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            model.device
        )
        with torch.no_grad():
            out = model.generate(
                **inputs,
                max_new_tokens=max(budgets),
                do_sample=False,
                eos_token_id=stop_ids,
                pad_token_id=tokenizer.pad_token_id,
                use_cache=True,
            )
    except Exception as exc:  # noqa: BLE001 — a diagnostic; training itself succeeded
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        model.train(was_training)
        tokenizer.padding_side = side
    stopped, lengths = 0, []
    for row, budget in zip(out[:, inputs["input_ids"].shape[1] :].tolist(), budgets):
        end = next((k for k, t in enumerate(row[:budget]) if t in stop_ids), None)  # each answer's own budget
        stopped += end is not None
        lengths.append(end + 1 if end is not None else min(budget, len(row)))
    return {"stopped": stopped, "of": len(conversations), "answer_tokens": lengths}
