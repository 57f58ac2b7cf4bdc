"""Stage 1, continued pretraining (CPT): teach a Base model BBj syntax from raw code.

Reads `cpt.jsonl` (chunks of BBj source, each closed with `<|endoftext|>`), trains a LoRA
adapter with the loss on every token, saves it to `cpt/adapter/` and merges it into the 16-bit
base weights in `cpt/merged/` (never into 4-bit weights: stage 2 then trains a fresh adapter on
the merged model, quantized again if QLoRA is on).

- Packing: chunks are packed into rows of `max_length` tokens (best-fit decreasing; a chunk
  longer than a row continues in the next one), each document attending only to itself.
- Fill-in-the-middle: `train.cpt.fim_rate` of the chunks become FIM samples (fim.py), so the
  model keeps (and learns for BBj) the completion editors ask for.
- Evaluation: the loss on the held-out answers' code (`heldout.jsonl`), which the model never
  trains on in either stage.
- Embeddings: `train.cpt.train_embeddings` also trains embed_tokens/lm_head in full, at
  `train.cpt.embedding_learning_rate` (default: the LoRA rate; 2-10x lower is common). Such an
  adapter is large and cannot be served as-is; the merge below bakes it into the weights.
- Learning rate ~2e-4 (LoRA), warmup then cosine decay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bbjtune.models.loading import model_config
from bbjtune.models.chat_template import ENDOFTEXT
from bbjtune.models.merge import merge_adapters
from bbjtune.train import backends
from bbjtune.train.fim import FimSettings, fim_documents
from bbjtune.train.inputs import TrainingData
from bbjtune.train.job import StageJob, is_main_process, wait_for_everyone
from bbjtune.train.lora import lora_settings
from bbjtune.train.model_io import load_training_tokenizer, save_adapter
from bbjtune.train.trainer import free_memory, run_trainer, training_arguments


def run_cpt(job: StageJob, data: TrainingData) -> dict[str, Any]:
    """Train stage 1, save `cpt/adapter/`, merge into `cpt/merged/`; returns the final metrics."""
    tokenizer = load_training_tokenizer(job.base_source)
    model, peft_settings, lora = _setup_model(job)
    train_dataset, eval_dataset, fim_stats = _setup_data(data, job, tokenizer)
    args = arguments(job, has_eval=eval_dataset is not None)
    trainer, metrics = run_trainer(job, model, tokenizer, args, train_dataset, eval_dataset, peft_settings)
    if is_main_process():
        save_adapter(trainer, tokenizer, job.adapter_dir, chat_model=False)
    del trainer, model
    free_memory()
    if is_main_process():
        merge(job)
    wait_for_everyone()
    if fim_stats is not None:
        metrics["fim"] = fim_stats
    return {"metrics": metrics, "lora": lora}


def arguments(job: StageJob, has_eval: bool):
    """Stage 1's trl config: plain text documents, each closed with <|endoftext|>, packed and split."""
    return training_arguments(
        job, has_eval, dataset_text_field="text", eos_token=ENDOFTEXT, packing_strategy="bfd_split"
    )


def merged_dir(job: StageJob) -> Path:
    return job.out_dir / "merged"


def _setup_model(job: StageJob) -> tuple[Any, dict[str, Any] | None, dict[str, Any]]:
    checkpointing = job.checkpointing  # decided (and said) before the model takes GPU memory
    modules = ["embed_tokens", "lm_head"] if job.stage_cfg.train_embeddings else None
    lora = lora_settings(job.cfg, model_config(job.base_source), modules_to_save=modules)
    if job.backend == "unsloth":
        return (
            backends.load_unsloth(job.base_source, job.cfg, job.stage_cfg, lora, checkpointing),
            None,
            lora,
        )
    return backends.load_hf(job.base_source, job.cfg), lora, lora


def _setup_data(data: TrainingData, job: StageJob | None = None, tokenizer: Any = None):
    """(train, held-out, FIM statistics or None); FIM samples only when a job asks for them."""
    from datasets import Dataset

    texts, fim_stats = list(data.texts), None
    if job is not None and tokenizer is not None and job.cfg.train.cpt.fim_rate > 0:
        texts, fim_stats = fim_texts(data, job, tokenizer)
    train = Dataset.from_dict({"text": [t + ENDOFTEXT for t in texts]})
    code = data.heldout_code()
    heldout = Dataset.from_dict({"text": [t + ENDOFTEXT for t in code]}) if code else None
    return train, heldout, fim_stats


def fim_texts(data: TrainingData, job: StageJob, tokenizer: Any) -> tuple[list[str], dict[str, Any]]:
    """The chunks with `train.cpt.fim_rate` of them as fill-in-the-middle samples, and what was done."""
    c = job.cfg.train.cpt
    settings = FimSettings(
        rate=c.fim_rate,
        spm_rate=c.fim_spm_rate,
        line_level_rate=c.fim_line_level_rate,
        repo_rate=c.fim_repo_rate,
        seed=job.cfg.train.seed,
    )

    def fits(texts: list[str]) -> list[bool]:  # + the closing <|endoftext|>
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(x) + 1 <= c.max_length for x in ids]

    sources = data.text_sources or [None] * len(data.texts)
    texts, stats = fim_documents(data.texts, sources, settings, fits)
    summary = stats.to_dict()
    job.console.print(
        f"stage 1: {summary['fim_samples']} of {stats.documents} documents as fill-in-the-middle "
        f"samples (train.cpt.fim_rate {c.fim_rate:g})",
        highlight=False,
    )
    return texts, summary


def merge(job: StageJob) -> Path:
    """Base (16-bit) + stage 1 adapter → `cpt/merged/`, a full model stage 2 starts from."""
    job.console.print(
        f"merging the stage 1 adapter into the {job.cfg.model.dtype} base weights → {merged_dir(job)}"
    )
    return merge_stage1(job.base_source, job.adapter_dir, merged_dir(job), job.cfg.model.dtype)


def merge_stage1(base: str, adapter_dir: Path, out: Path, dtype: str) -> Path:
    """Fold stage 1's adapter into the base's 16-bit weights (on the GPU when there is one); also how a
    released `cpt/merged/` is rebuilt."""
    import torch

    return merge_adapters(
        base,
        [adapter_dir],
        out,
        tokenizer_source=str(adapter_dir),
        chat=False,
        dtype=dtype,
        device_map={"": 0} if torch.cuda.is_available() else None,
    )
