"""One YAML file describes a whole bbjtune run; this module validates it before anything heavy starts.

A config has one section per stage (`model`, `data`, `train`, `eval`, `export`). Every key is
checked: unknown keys, wrong types and contradictory settings fail at once with the key path and a
hint, long before a model is loaded. Named presets live in `configs/` (`bbjtune run quickstart`).

Relative paths in a config are resolved against the current directory, like the command line's;
a preset's paths and the built-in defaults that name bbjtune's own files fall back to the project
they ship in (`config_paths.py`).
"""

from __future__ import annotations

import difflib
import functools
import glob
import os
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from bbjtune.config_paths import INPUT_KEYS, anchor_inputs, anchor_section, matches
from bbjtune.errors import BbjtuneError

REPO_ROOT = Path(__file__).resolve().parents[2]
PRESET_DIRS = (Path("configs"), REPO_ROOT / "configs")

Generation = Literal["character", "vpro5", "gui", "dwc"]
DType = Literal["auto", "bfloat16", "float16", "float32"]
SELF_TRAINING_STAGES = ("rft", "dpo", "grpo")
TRAIN_STAGE_ORDER = ("cpt", "sft", *SELF_TRAINING_STAGES)  # the order a train.stages list runs in


# YAML 1.1 reads these words, unquoted, as booleans
_YAML_BOOL_WORDS = {True: ("on", "yes"), False: ("off", "no")}


@functools.cache
def _literal_words(annotation: Any) -> frozenset[str]:
    """The words a setting takes when its type is a Literal of words only (else none)."""
    if get_origin(annotation) is Literal and all(isinstance(a, str) for a in get_args(annotation)):
        return frozenset(get_args(annotation))
    return frozenset()


class Section(BaseModel):
    """A config section: unknown keys are errors, values are re-checked when assigned."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _yaml_words(cls, data: Any) -> Any:
        """YAML reads an unquoted `off`, `on`, `yes` or `no` as a boolean; a setting that takes only words
        gets the word back (`code_check: off`, `train_chat_tokens: no`)."""
        if not isinstance(data, dict):
            return data
        words = {}
        for name, value in data.items():
            if isinstance(value, bool) and name in cls.model_fields:
                options = _literal_words(cls.model_fields[name].annotation)
                words.update({name: w for w in _YAML_BOOL_WORDS[value] if w in options})
        return {**data, **words} if words else data


# ----------------------------------------------------------------------------- model


class ModelConfig(Section):
    source: str = Field(
        "tiny:demo",
        description="hub id (pinned with @<branch, tag or commit> if you like), local HF directory, local .gguf file, "
        "or tiny:<preset>",
    )
    kind: Literal["base", "instruct"] = Field(
        "base",
        description="base: run stage 1 (CPT) then stage 2 (SFT); instruct: SFT only is the usual shortcut",
    )
    dtype: DType = "auto"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = None


# ----------------------------------------------------------------------------- data


class SelfReplayConfig(Section):
    """General conversations the data stage makes from an Instruct model's own answers (data/self_replay.py).

    Generation loads the answering model, so it needs the GPU machine (once per run: the file is
    kept and a killed generation continues); the rest of the data stage loads no model.
    """

    enabled: bool = Field(
        False,
        description="have the data stage write <run>/replay/self-distilled.jsonl (the model's own "
        "answers to general coding prompts; needs the GPU) and use it as a data.replay file",
    )
    model: str | None = Field(
        None,
        description="the model that answers; default: model.source for an Instruct model (a Base "
        "model needs its Instruct sibling here, e.g. Qwen/Qwen2.5-Coder-7B-Instruct)",
    )
    samples: int = Field(2, gt=0, description="answers per prompt")
    temperature: float | None = Field(
        None, ge=0.0, description="default: 0 (greedy) for one sample, 0.7 for several"
    )
    max_new_tokens: int = Field(1024, ge=16, description="answers that run out of tokens are left out")
    prompts: str | None = Field(
        None,
        description='JSONL of {"prompt": ...} lines; default: the 160 general coding prompts shipped '
        "with bbjtune",
    )
    batch_size: int = Field(16, gt=0, description="prompts answered together")


class DataConfig(Section):
    chatml: list[str] = Field(default_factory=list, description="globs of ChatML JSONL instruction files")
    sources: list[str] = Field(
        default_factory=list, description="globs or folders of raw BBj source files for stage 1"
    )
    output_dir: str | None = Field(None, description="default: <run output_dir>/data")
    system_prompt: str | None = Field(
        None, description="the fixed system prompt; default: the most common one"
    )
    add_system_prompt: bool = Field(
        True, description="give conversations without a system message the system prompt"
    )
    heldout_ratio: float = Field(0.08, ge=0.0, lt=0.5)
    heldout_sources_ratio: float = Field(
        0.05,
        ge=0.0,
        lt=0.5,
        description="share of the source files (data.sources) kept out of stage 1 for the "
        "fill-in-the-middle evaluation (heldout_sources.jsonl; from 10 files on)",
    )
    seed: int = 42
    max_length: int | None = Field(
        None, gt=0, description="token limit for the audit; default: train.sft.max_length"
    )
    drop_too_long: bool = Field(
        True, description="leave out conversations longer than max_length (training would cut off their end)"
    )
    min_answer_chars: int = Field(
        10, ge=0, description="answers of at most this many characters are fragments"
    )
    drop_truncated: bool = Field(
        True, description="leave out answers that look cut off (an unclosed ``` block, ...)"
    )
    fix_escapes: bool = Field(True, description="turn literal \\n escapes back into line breaks")
    duplicate_prompts: Literal["keep-first", "keep-all"] = Field(
        "keep-first",
        description="a prompt that occurs again with another answer: keep only the first, or all",
    )
    near_duplicate_threshold: float = Field(0.9, gt=0.0, le=1.0)
    split_group_threshold: float = Field(
        0.7,
        gt=0.0,
        le=1.0,
        description="prompts at least this similar always land on the same side of the split",
    )
    code_check: Literal["off", "report", "reject"] = "report"
    quality_check: Literal["off", "report", "reject"] = Field(
        "report",
        description="the tier 2 checks on the BBj of training answers that pass the checker: BBjAPI methods "
        "that do not exist, impossible argument counts, GOTO/GOSUB/ERR= to labels the code lacks, code "
        "with no statement, runaway repetition. report: count and list them in the audit; reject: set "
        "those answers aside (the model learns what it is shown)",
    )
    scrub_secrets: bool = True
    decontaminate_against: list[str] = Field(default_factory=lambda: ["evals/*.jsonl"])
    decontaminate_ngram: int = Field(8, ge=3)
    decontaminate_threshold: float = Field(0.5, gt=0.0, le=1.0)
    replay: list[str] = Field(
        default_factory=list,
        description="globs of general (non-BBj) ChatML files mixed into stage 2 to keep general "
        "coding skills (bbjtune data replay makes one from the model's own answers)",
    )
    self_replay: SelfReplayConfig = Field(default_factory=SelfReplayConfig)
    cpt_from_answers: bool = True
    cpt_near_dedupe: bool = False
    cpt_chunk_tokens: int | None = Field(None, gt=64, description="default: train.cpt.max_length")
    strict: bool = Field(False, description="stop at the first unusable line instead of setting it aside")
    workers: int | None = Field(
        None,
        ge=1,
        description="processes that read the ChatML files (default: one per CPU core, up to 4, "
        "for inputs over 4 MB)",
    )


# ----------------------------------------------------------------------------- train


class LoraConfig(Section):
    r: int = Field(32, gt=0)
    alpha: int = Field(64, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: Literal["all-linear"] | list[str] = "all-linear"
    use_rslora: bool = False
    use_dora: bool = False


class QuantizationConfig(Section):
    load_in_4bit: bool = Field(True, description="QLoRA: base weights in 4-bit (bitsandbytes)")
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"


class StageConfig(Section):
    enabled: bool = True
    learning_rate: float = Field(gt=0.0, lt=1.0)
    epochs: float = Field(1.0, gt=0.0)
    max_steps: int = Field(-1, description="-1: run the epochs; >0 overrides them")
    max_length: int = Field(2048, gt=0)
    packing: bool = True
    per_device_batch_size: int = Field(4, gt=0)
    gradient_accumulation_steps: int = Field(8, gt=0)
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    train_embeddings: bool = Field(
        False,
        description="also train embed_tokens/lm_head in full (stage 1 on new "
        "vocabulary, tiny random models; the adapter must be merged)",
    )
    embedding_learning_rate: float | None = Field(None, gt=0.0, lt=1.0)


class CptConfig(StageConfig):
    learning_rate: float = Field(2e-4, gt=0.0, lt=1.0)
    # 0.5: the FIM paper (arXiv:2207.14255) saw no left-to-right cost at 0.5-0.9, StarCoder used 0.5,
    # and Qwen2.5-Coder was pretrained with FIM: plain text alone would train editor completion away.
    fim_rate: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="share of stage 1 documents turned into fill-in-the-middle samples "
        "(what editors ask for); 0: plain text only",
    )
    fim_spm_rate: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="share of FIM samples in suffix-prefix-middle order (the rest prefix-suffix-middle)",
    )
    fim_line_level_rate: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="share of FIM samples whose hole is whole lines (the rest: cut at "
        "random characters, like a cursor inside a line)",
    )
    fim_repo_rate: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of FIM samples from source files that start with other files of "
        "the same folder (<|repo_name|>/<|file_sep|>, repository-level completion)",
    )
    keep_merged: bool = Field(
        True,
        description=(
            "keep stage 1's merged 16-bit model (cpt/merged, as large as the model: 27.5 GiB for 14B) once stage 2 "
            "has trained on it. false: deleted after stage 2 (before the first self-training round's start when "
            "one follows); trained.json then names the original model and stage 1's adapter, which evaluation and "
            "export merge on the fly, and a stage that trains on it again rebuilds it"
        ),
    )


class SftConfig(StageConfig):
    learning_rate: float = Field(5e-5, gt=0.0, lt=1.0)
    epochs: float = Field(2.0, gt=0.0)
    assistant_only_loss: bool = True
    train_chat_tokens: Literal["auto", "yes", "no"] = Field(
        "auto", description="train the <|im_start|>/<|im_end|> embedding rows (auto: yes for Base models)"
    )
    replay_ratio: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="share of stage 2's training examples drawn from the prepared replay.jsonl "
        "(when data.replay gave one; 0: BBj only)",
    )
    stop_check: int = Field(
        4,
        ge=0,
        description="after training, answer this many held-out requests greedily and report how many "
        "end with <|im_end|> (0: skip)",
    )


# The data stage writes it into the data directory, self-training reads it (train/samples.py).
SELFTRAIN_PROMPTS_FILE = "selftrain-prompts.jsonl"


class RefillEngine:
    """A section whose `engine` may be `refill` (models/generate_refill.py), with its `segment_tokens`."""

    @property
    def refill_segment(self) -> int | None:
        """The transformers backend's segment size, or None for the other engines."""
        return self.segment_tokens if self.engine == "refill" else None  # type: ignore[attr-defined]


class SelfSampleConfig(RefillEngine, Section):
    """How a self-training stage samples and judges answers to the training prompts."""

    samples_per_prompt: int = Field(8, ge=2, description="answers sampled per training prompt (k)")
    temperature: float = Field(
        0.8, gt=0.0, description="sampling temperature (> 0: the k answers must differ)"
    )
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    greedy: bool = Field(
        False,
        description=(
            "add one greedy answer (temperature 0) per prompt to the k samples: the answer an evaluation and an "
            "editor see. Greedy decoding loops where sampling does not (on the real 0.5B, 19 % of greedy answers "
            "ran to the token limit against 10 % of samples), so its failures give DPO the rejected answers that "
            "matter most"
        ),
    )
    max_new_tokens: int = Field(
        768, gt=0, description="an answer that reaches it counts as failing (it ran on)"
    )
    max_prompts: int | None = Field(
        None, gt=0, description="at most N training prompts per round (default: all)"
    )
    extra_prompts: list[str] = Field(
        default_factory=list,
        description=(
            "globs of more ChatML files to take prompts from, e.g. `bbjtune data derive` output; checked against the "
            "eval suites and the held-out split like the training data"
        ),
    )
    prompts: Literal["fresh", "train", "both"] = Field(
        "fresh",
        description=(
            "which prompts to sample: fresh = the data stage's selftrain-prompts.jsonl (derived from data.sources, "
            "none of them trained on) plus extra_prompts; train = train.jsonl's prompts plus extra_prompts; both = "
            "all. fresh falls back to train, with a note, when there are no fresh prompts"
        ),
    )
    batch_tokens: PositiveInt | Literal["auto"] = Field(
        "auto",
        description=(
            "sequences x (prompt + answer tokens) generated at once; larger batches use the GPU better. auto: half "
            "of the GPU memory free once the model is loaded, at about 4x the KV cache per token (65,536 on a CPU)"
        ),
    )
    engine: Literal["batched", "refill", "continuous"] = Field(
        "refill",
        description=(
            "refill: segments of segment_tokens, after each of which ended answers give their rows to waiting "
            "ones (sampled answers end at very different lengths: 2.75x the useful tokens/s of batched on one "
            "H100, benchmarks/refill_speed.py); batched: padded batches of batch_tokens, each decoding until its "
            "longest answer ends; continuous: transformers' continuous batching (GPU only in practice)"
        ),
    )
    segment_tokens: int = Field(
        128, gt=0, description="refill: new tokens per segment; each segment reads the text so far again"
    )
    min_pattern_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description=(
            "an answer passes the prompt's own patterns (derived from the reference answer) when it matches at "
            "least this share of them"
        ),
    )
    compiler: Literal["auto", "builtin", "bbjcpl"] = Field("auto", description="auto: bbjcpl when installed")
    rounds: int = Field(
        1, ge=1, le=10, description="sample → train rounds; each round samples from the last one's model"
    )
    seed: int = 42


# How self-training samples are computed, not what is drawn: changing them keeps samples and rounds done.
SAMPLING_EXECUTION = ("engine", "batch_tokens", "segment_tokens")


class RftConfig(SftConfig):
    """Rejection-sampling fine-tuning: stage 2's recipe on the best passing sample of each prompt (and the references)."""

    learning_rate: float = Field(2e-5, gt=0.0, lt=1.0)
    epochs: float = Field(1.0, gt=0.0)
    include_references: bool | Literal["untrained"] = Field(
        "untrained",
        description=(
            "train on the prompts' reference answers too: true = all, untrained = only those of prompts stage 2 "
            "did not train on (fresh and extra prompts; a training prompt's reference is stage 2's own data: "
            "RFT with all of them lost 7 points of compile@1 on the real 0.5B), false = none"
        ),
    )
    sampling: SelfSampleConfig = Field(default_factory=SelfSampleConfig)


class DpoConfig(StageConfig):
    """Preference optimisation on (passing, failing) answers to the same prompt."""

    learning_rate: float = Field(5e-6, gt=0.0, lt=1.0)
    epochs: float = Field(1.0, gt=0.0)
    packing: bool = False
    per_device_batch_size: int = Field(2, gt=0)
    gradient_accumulation_steps: int = Field(8, gt=0)
    beta: float = Field(0.1, gt=0.0, description="how far the policy may move from the starting model")
    loss: Literal["auto", "dpo", "kto"] = Field(
        "auto",
        description=(
            "dpo: pairs; kto: unpaired good/bad answers (uses prompts where all k answers pass or all fail); "
            "auto: kto when fewer than min_pairs pairs were built"
        ),
    )
    min_pairs: int = Field(64, gt=0)
    reference_as_chosen: bool = Field(
        True,
        description=("when no sample of a prompt passes, pair its reference answer with a failing sample"),
    )
    max_pairs_per_prompt: int = Field(2, gt=0)
    sft_weight: float = Field(
        0.0,
        ge=0.0,
        description=(
            "weight of a supervised term on the chosen answers added to the DPO loss (trl's loss_type [sigmoid, "
            "sft], the RPO recipe): the chosen answers stay likely while the pair's margin grows, where plain DPO "
            "can lower both. 0 = plain DPO. Not yet measured on a real model"
        ),
    )
    loop_pairs: bool = Field(
        False,
        description=(
            "also pair an answer that ran to the token limit in a loop against itself cut after the loop's first "
            "copy (when the cut answer compiles): the pair differs only where the loop starts (models/loops.py). "
            "Not yet measured on a real model"
        ),
    )
    sampling: SelfSampleConfig = Field(default_factory=SelfSampleConfig)


class GrpoConfig(StageConfig):
    """GRPO with the checks as the reward (online: the model samples while it trains; slow, optional)."""

    learning_rate: float = Field(1e-6, gt=0.0, lt=1.0)
    epochs: float = Field(1.0, gt=0.0)
    packing: bool = False
    per_device_batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    beta: float = Field(0.04, ge=0.0, description="KL penalty towards the starting model")
    sampling: SelfSampleConfig = Field(default_factory=SelfSampleConfig)


class TrainConfig(Section):
    backend: Literal["auto", "hf", "unsloth"] = "auto"
    stages: Literal["all", "cpt", "sft"] | list[Literal["cpt", "sft", "rft", "dpo", "grpo"]] = Field(
        "all",
        description="all: cpt then sft (sft alone for Instruct models); or a list in order, e.g. "
        "[cpt, sft, rft, dpo] (rft/dpo/grpo learn from the checker's verdicts on the model's samples)",
    )
    output_dir: str | None = Field(None, description="default: <run output_dir>")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig)
    cpt: CptConfig = Field(default_factory=CptConfig)
    sft: SftConfig = Field(default_factory=SftConfig)
    rft: RftConfig = Field(default_factory=RftConfig)
    dpo: DpoConfig = Field(default_factory=DpoConfig)
    grpo: GrpoConfig = Field(default_factory=GrpoConfig)

    @field_validator("stages", mode="before")
    @classmethod
    def _known_stages(cls, value: Any) -> Any:
        if isinstance(value, list):
            unknown = [s for s in value if s not in TRAIN_STAGE_ORDER]
            if unknown:
                raise ValueError(
                    f"unknown stage(s) {unknown}: list some of {', '.join(TRAIN_STAGE_ORDER)} in that order"
                )
        return value

    keep_round_models: bool = Field(
        True,
        description=(
            "keep every self-training round's 16-bit start model (<stage>/round-N/start, as large as the model: "
            "27.5 GiB for 14B). false: a start is deleted as soon as the next round or stage no longer needs it "
            "(only the last one stays, the one trained.json names), so a run holds one at a time; a deleted one is "
            "rebuilt from the original model and the adapters when something trains on it again"
        ),
    )
    optim: Literal["paged_adamw_8bit", "adamw_8bit", "adamw_torch", "adamw_torch_fused"] = "paged_adamw_8bit"
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description=(
            "recompute each layer's activations in the backward pass instead of keeping them (less memory, "
            "about a third more compute). auto (the default): off when the dry run's estimate without it "
            "fits in 85% of the GPU memory free when the stage starts, else on; always on without a CUDA "
            "GPU, for sharded launches and for the self-training stages"
        ),
    )
    use_liger: bool = False
    seed: int = 42
    logging_steps: int = Field(10, gt=0)
    eval_steps: int | None = Field(None, gt=0, description="default: once per epoch")
    save_steps: int | None = Field(None, gt=0, description="default: once per epoch")
    save_total_limit: int = Field(2, gt=0)
    early_stopping_patience: int | None = Field(None, gt=0)
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    max_grad_norm: float = Field(1.0, gt=0.0, description="gradient clipping")
    keep_checkpoints: bool = Field(
        False, description="keep the resumable checkpoints after a stage completes"
    )
    cpu_threads: int | None = Field(
        None,
        gt=0,
        description="torch threads when training on CPU (default: torch's choice; 1 is fastest for tiny models)",
    )


# ----------------------------------------------------------------------------- eval


class HumanEvalConfig(Section):
    enabled: bool = True
    limit: int | None = Field(None, gt=0, description="first N of the 164 tasks (quick runs)")
    max_drop_points: float = Field(5.0, ge=0.0, description="gate: tuned may lose at most this many points")
    timeout_s: float = Field(10.0, gt=0.0, description="wall-clock and CPU-time limit per program")
    memory_mb: int = Field(1024, ge=64, description="memory limit per program, all its processes together")
    sandbox: Literal["auto", "bwrap", "namespaces", "rlimits"] = Field(
        "auto",
        description="isolation of the model's code: auto/bwrap needs bubblewrap (apt-get install "
        "bubblewrap) and refuses to run without it; namespaces (unshare) and rlimits (limits "
        "only, no real isolation) are weaker and run only when chosen here",
    )
    max_new_tokens: int = Field(512, gt=0)
    prompt_style: Literal["auto", "chat", "completion"] = Field(
        "auto",
        description="chat: the problem as a user message; completion: the model continues the code "
        "(auto: completion for Base models, chat for Instruct)",
    )
    workers: int | None = Field(None, gt=0, description="programs run in parallel (default: CPU count)")


class FimEvalConfig(Section):
    enabled: bool = Field(
        True,
        description="the fill-in-the-middle suite (editor completion), built from the data "
        "stage's held-out source files (heldout_sources.jsonl)",
    )
    samples: int = Field(60, gt=0, description="holes to fill, spread over the held-out files and the kinds")
    kinds: list[Literal["line", "block", "statement"]] = Field(
        default_factory=lambda: ["line", "block", "statement"],
        description="line: a whole line; block: 2 to max_block_lines lines; statement: the rest of a line",
    )
    max_block_lines: int = Field(4, ge=2)
    context_lines_before: int = Field(
        40,
        ge=0,
        description="lines of the file sent before the hole (editors send a window, not the whole file)",
    )
    context_lines_after: int = Field(20, ge=0, description="lines of the file sent after the hole")
    max_new_tokens: int = Field(128, gt=0)
    seed: int = 42


class EvalConfig(RefillEngine, Section):
    suites: list[str] = Field(
        default_factory=lambda: ["evals/bbj-core.jsonl", "evals/bbj-challenge.jsonl"],
        description="eval suite files (JSONL or YAML); globs allowed",
    )
    output_dir: str | None = Field(None, description="default: <run output_dir>/eval")
    compiler: Literal["auto", "builtin", "bbjcpl"] = "auto"
    backend: Literal["transformers", "http", "gguf"] = "transformers"
    base_url: str | None = Field(
        None, description="http backend: the server's OpenAI-compatible address (…/v1)"
    )
    api_model: str | None = Field(None, description="http backend: the served name of the tuned model")
    base_api_model: str | None = Field(
        None, description="http backend: the served name of the base model, if any"
    )
    gguf_file: str | None = Field(None, description="gguf backend: the tuned model's .gguf file")
    base_gguf_file: str | None = Field(None, description="gguf backend: the base model's .gguf file, if any")
    request_timeout_s: float = Field(
        120.0,
        gt=0.0,
        description=(
            "http backend: seconds one answer may take. A request may wait behind the others in flight, since "
            "a one-slot server (llama.cpp's, as `bbjtune serve gguf` runs it) answers them one by one: each "
            "request is given request_timeout_s x concurrency before it is retried"
        ),
    )
    retries: int = Field(3, ge=0)
    concurrency: int = Field(8, gt=0, description="http backend: requests in flight at once")

    @property
    def http_wait_s(self) -> float:
        """How long one request to the http backend may take: its answer, after those ahead of it.

        With a plain per-request timeout, 8 requests in flight at a one-slot llama.cpp server timed out
        after 120 s in the queue and were sent again while the server still worked on them: 34 requests
        for 15 prompts through the gateway, the duplicates slowing every later answer."""
        return self.request_timeout_s * self.concurrency

    threads: int | None = Field(None, gt=0, description="gguf backend: CPU threads (default: all cores)")
    system_prompt: str | None = Field(
        None, description="default: the training data's system prompt (trained.json)"
    )
    n_samples: int = Field(1, gt=0)
    k: list[int] = Field(default_factory=lambda: [1])
    temperature: float = Field(0.2, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(768, gt=0)
    repeat_penalty: float = Field(
        1.0,
        ge=1.0,
        le=2.0,
        description=(
            "llama.cpp's repetition penalty over the last repeat_last_n tokens, in every backend; 1.0 = off. "
            "The Modelfile gets the same value unless export.ollama.repeat_penalty says otherwise (Ollama's "
            "documented default where a Modelfile is silent is 1.1), so the evaluation measures what Ollama runs"
        ),
    )
    repeat_last_n: int = Field(
        64, ge=0, description="the repeat penalty's window in tokens (0: the whole context)"
    )
    batch_size: int = Field(16, gt=0)
    engine: Literal["batched", "refill"] = Field(
        "batched",
        description=(
            "transformers backend: batched = padded batches of batch_size prompts, each decoding until its "
            "longest answer ends; refill = segments of segment_tokens, ended answers giving their rows to "
            "waiting prompts (the same greedy answers)"
        ),
    )
    segment_tokens: int = Field(128, gt=0, description="refill: new tokens per segment")

    limit: int | None = Field(
        None, gt=0, description="at most N prompts per suite, spread over the categories"
    )
    seed: int = 42
    compare_with_base: bool = True
    humaneval: HumanEvalConfig = Field(default_factory=HumanEvalConfig)
    fim: FimEvalConfig = Field(default_factory=FimEvalConfig)

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        if self.backend == "http" and not self.base_url:
            raise ValueError("backend 'http' needs base_url (e.g. http://127.0.0.1:11434/v1 for Ollama)")
        if self.backend == "gguf" and not self.gguf_file:
            raise ValueError("backend 'gguf' needs gguf_file (e.g. runs/<name>/export/<name>.q4_k_m.gguf)")
        if max(self.k) > self.n_samples:
            raise ValueError(f"k={max(self.k)} needs n_samples >= {max(self.k)} (got {self.n_samples})")
        if self.n_samples > 1 and self.temperature == 0.0:
            raise ValueError("n_samples > 1 with temperature 0 gives identical samples; raise temperature")
        return self


# ----------------------------------------------------------------------------- export

QuantType = Literal["f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "q3_k_m", "q2_k"]


class OllamaConfig(Section):
    enabled: bool = True
    model_name: str | None = Field(None, description="default: bbj-<run name>")
    num_ctx: int = Field(8192, gt=0)
    temperature: float = Field(0.2, ge=0.0)
    repeat_penalty: float | None = Field(
        None, ge=1.0, le=2.0, description="default: eval.repeat_penalty (with eval.repeat_last_n)"
    )
    system_prompt: str | None = Field(None, description="default: the training data's system prompt")
    quant: QuantType = "q4_k_m"


class VllmConfig(Section):
    enabled: bool = True
    served_name: str | None = None
    max_loras: int = Field(4, gt=0)
    max_model_len: int = Field(8192, gt=0)


class ExportConfig(Section):
    output_dir: str | None = Field(None, description="default: <run output_dir>/export")
    merged: bool | Literal["auto"] = Field(
        "auto",
        description="keep merged/ (16-bit safetensors for vLLM or transformers), merged by PEFT on the whole "
        "model; false: the GGUF files are made by merging tensor by tensor (RAM of one tensor, no merged copy "
        "on disk); auto: true when this machine's free disk and RAM hold it beside the GGUF files, else false "
        "(said when it happens)",
    )
    gguf: list[QuantType] = Field(
        default_factory=lambda: ["f16", "q8_0", "q4_k_m"],
        description=(
            "GGUF files to write: f16, bf16 and q8_0 directly, the k-quants (q4_k_m, ...) through llama.cpp"
        ),
    )
    verify: bool = Field(
        True,
        description="load each GGUF with llama.cpp and compare tokens, logits and "
        "greedy text with the merged model; a mismatch fails the export",
    )
    lora_gguf: bool = Field(
        False,
        description="also write the adapter as a GGUF LoRA adapter, with its base "
        "as an f16 GGUF (only for adapters without embedding weights)",
    )
    threads: int | None = Field(None, gt=0, description="CPU threads for llama.cpp (default: all cores)")
    kquant_source: Literal["auto", "f16", "q8_0"] = Field(
        "auto",
        description=(
            "the GGUF llama.cpp makes the k-quants (q4_k_m, ...) from: f16 (llama.cpp's usual input); q8_0 "
            "(no f16 file at all: an estimated export peak of 23 instead of 51 GiB for 14B); auto: f16, or q8_0 when the "
            "disk cannot hold the f16 file beside the others (said when it happens)"
        ),
    )
    ollama: OllamaConfig = Field(default_factory=OllamaConfig)
    vllm: VllmConfig = Field(default_factory=VllmConfig)

    @model_validator(mode="after")
    def _check(self) -> ExportConfig:
        if len(set(self.gguf)) != len(self.gguf):
            raise ValueError("export.gguf lists a quant type twice")
        if self.ollama.enabled and self.ollama.quant not in self.gguf:
            raise ValueError(
                f"export.ollama.quant '{self.ollama.quant}' is not in export.gguf {self.gguf}: "
                "add it there or choose one of those"
            )
        return self


# ----------------------------------------------------------------------------- the run


class RunConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    output_dir: str = Field("runs/{name}", description="where every stage writes; {name} is replaced")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        t = self.train
        stages = self.planned_stages
        if "cpt" in stages and t.cpt.enabled and not (self.data.sources or self.data.cpt_from_answers):
            raise ValueError(
                "train.stages runs stage 1 (CPT) but data.sources is empty and "
                "data.cpt_from_answers is false: give raw BBj sources or set train.stages: sft"
            )
        replay = self.data.self_replay
        if replay.enabled and self.model.kind == "base" and not replay.model:
            raise ValueError(
                f"data.self_replay is enabled but model.source {self.model.source} is a Base model, which "
                "does not answer chat requests: set data.self_replay.model to its Instruct sibling "
                "(e.g. Qwen/Qwen2.5-Coder-7B-Instruct for Qwen/Qwen2.5-Coder-7B) or "
                "data.self_replay.enabled: false"
            )
        if "sft" in stages and t.sft.enabled and not self.data.chatml:
            raise ValueError("train.stages runs stage 2 (SFT) but data.chatml lists no instruction files")
        if t.early_stopping_patience and self.data.heldout_ratio == 0:
            raise ValueError("train.early_stopping_patience needs a held-out set: set data.heldout_ratio > 0")
        if isinstance(t.stages, list):
            if len(set(t.stages)) != len(t.stages):
                raise ValueError(f"train.stages lists a stage twice: {t.stages}")
            if t.stages != sorted(t.stages, key=TRAIN_STAGE_ORDER.index):
                raise ValueError(
                    f"train.stages {t.stages} is out of order: stages run as {', '.join(TRAIN_STAGE_ORDER)}"
                )
            if any(s in t.stages for s in SELF_TRAINING_STAGES) and not self.data.chatml:
                raise ValueError(
                    "train.stages has a self-training stage but data.chatml lists no instruction files "
                    "(its prompts and references come from the training data)"
                )
        for name in ("cpt", "sft"):
            if getattr(t, name).embedding_learning_rate and not getattr(t, name).train_embeddings:
                raise ValueError(
                    f"train.{name}.embedding_learning_rate is set but train.{name}.train_embeddings is false"
                )
        if t.lora.use_dora and self.export.vllm.enabled:
            raise ValueError(
                "train.lora.use_dora: vLLM cannot serve DoRA adapters; set export.vllm.enabled: false "
                "or train.lora.use_dora: false"
            )
        if t.quantization.load_in_4bit and t.optim == "adamw_torch_fused" and t.backend == "unsloth":
            raise ValueError("train.optim adamw_torch_fused is not supported with the unsloth backend")
        if self.export.vllm.enabled and t.lora.r > 512:
            raise ValueError("train.lora.r above 512 cannot be served by vLLM (max_lora_rank <= 512)")
        return self

    # -- derived locations -------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir.replace("{name}", self.name))

    @property
    def data_dir(self) -> Path:
        return Path(self.data.output_dir) if self.data.output_dir else self.run_dir / "data"

    @property
    def train_dir(self) -> Path:
        return Path(self.train.output_dir) if self.train.output_dir else self.run_dir

    @property
    def eval_dir(self) -> Path:
        return Path(self.eval.output_dir) if self.eval.output_dir else self.run_dir / "eval"

    @property
    def export_dir(self) -> Path:
        return Path(self.export.output_dir) if self.export.output_dir else self.run_dir / "export"

    def gguf_file(self, quant: str) -> Path:
        """Where the export writes the GGUF of one quant type, and where `serve` looks for it."""
        return self.export_dir / f"{self.name}.{quant}.gguf"

    @property
    def served_repetition(self) -> tuple[float, int]:
        """(repeat_penalty, repeat_last_n) the Modelfile states and `serve gguf` applies:
        export.ollama.repeat_penalty when set, else the evaluation's."""
        chosen = self.export.ollama.repeat_penalty
        return (self.eval.repeat_penalty if chosen is None else chosen), self.eval.repeat_last_n

    @property
    def planned_stages(self) -> list[str]:
        """The stages train.stages names, before the Instruct shortcut and `enabled` are applied."""
        stages = self.train.stages
        return (
            list(stages)
            if isinstance(stages, list)
            else {"all": ["cpt", "sft"], "cpt": ["cpt"], "sft": ["sft"]}[stages]
        )

    @property
    def train_stages(self) -> list[str]:
        wanted = self.planned_stages
        if self.model.kind == "instruct" and self.train.stages == "all":
            wanted = ["sft"]  # the documented shortcut: Instruct models skip continued pretraining
        return [s for s in wanted if getattr(self.train, s).enabled]


# ----------------------------------------------------------------------------- loading


def list_presets() -> list[str]:
    names: set[str] = set()
    for d in PRESET_DIRS:
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a preset in configs/ (`quickstart`, `qwen2.5-coder-7b-base`)."""
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_path or p.exists():
        if not p.exists():
            raise BbjtuneError(
                f"config file {p} does not exist",
                f"check the path, or use a preset name: {', '.join(list_presets())}",
            )
        if p.is_dir():
            raise BbjtuneError(f"{p} is a directory, not a config file", "pass a .yaml file or a preset name")
        return p
    for d in PRESET_DIRS:
        candidate = d / f"{name_or_path}.yaml"
        if candidate.exists():
            return candidate
    close = difflib.get_close_matches(name_or_path, list_presets(), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known presets: {', '.join(list_presets())}"
    raise BbjtuneError(f"unknown preset '{name_or_path}'", hint)


def load_config(name_or_path: str, overrides: list[str] | None = None) -> RunConfig:
    """Read, override (`key.path=value`) and validate a config. Errors are BbjtuneErrors."""
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BbjtuneError(
            f"cannot read config {path}: {exc.strerror}", "check the file's permissions"
        ) from exc
    except UnicodeDecodeError as exc:
        raise BbjtuneError(f"config {path} is not UTF-8 text", "save it as UTF-8") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise BbjtuneError(
            f"{path}{where}: {problem}", "fix the YAML syntax (indentation, colons, quotes)"
        ) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BbjtuneError(
            f"{path}: the top level must be a mapping of sections (name:, model:, data:, ...)",
            "see configs/quickstart.yaml for the layout",
        )
    raw.setdefault("name", path.stem)
    for item in overrides or []:
        apply_override(raw, item)
    in_configs_dir = any(path.resolve().parent == d.resolve() for d in PRESET_DIRS if d.is_dir())
    return validate_config(
        raw, source=str(path), preset_root=path.resolve().parent.parent if in_configs_dir else None
    )


def validate_config(
    raw: dict[str, Any], source: str = "<config>", preset_root: Path | None = None
) -> RunConfig:
    """Validate a config; relative inputs of a preset (in `preset_root`/configs) and of the built-in
    defaults are found from their own root when the current directory lacks them (config_paths.py)."""
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise BbjtuneError(*_explain(exc, source)) from None
    anchor_inputs(cfg, preset_root, REPO_ROOT)
    return cfg


def default_data_config() -> DataConfig:
    """The data section's defaults alone (`bbjtune data feedback` without a config), its built-in
    paths found as in a whole config (config_paths.py)."""
    data = DataConfig()
    for section_name, key in INPUT_KEYS:
        if section_name == "data":
            anchor_section(data, key, None, REPO_ROOT)
    return data


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `--set section.key=value` override; the value is parsed as YAML (`3`, `true`, `[a, b]`)."""
    if "=" not in item:
        raise BbjtuneError(
            f"override '{item}' has no '='", "write it as key.path=value, e.g. train.lora.r=16"
        )
    key, _, value = item.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise BbjtuneError(f"override '{item}' has an empty key", "write it as key.path=value")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    node = raw
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise BbjtuneError(f"override '{item}': '{p}' is not a section", "check the key path")
        node = child
    node[parts[-1]] = parsed


def _explain(exc: ValidationError, source: str) -> tuple[str, str]:
    """Turn pydantic's first error into (message with key path, hint)."""
    err = exc.errors()[0]
    loc = [str(x) for x in err["loc"] if not str(x).startswith(("function-after", "union"))]
    key = ".".join(x for x in loc if not x.startswith(("list[", "literal[")))
    etype = err["type"]
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    if etype == "extra_forbidden":
        parent, name = loc[:-1], loc[-1]
        fields = _fields_at(parent)
        close = difflib.get_close_matches(name, fields, n=1)
        hint = (
            f"did you mean '{'.'.join([*parent, close[0]])}'?"
            if close
            else (f"known keys here: {', '.join(fields)}" if fields else "remove it")
        )
        return f"{source}: unknown key '{key}'{more}", hint
    if etype == "missing":
        return f"{source}: '{key}' is required{more}", "add it to the config"
    if etype == "value_error":
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        where = f"'{key}': " if key else ""
        return f"{source}: {where}{msg}{more}", "fix the contradicting settings"
    if etype == "literal_error":
        return (
            f"{source}: '{key}' = {err.get('input')!r} is not allowed{more}",
            f"use one of {err.get('ctx', {}).get('expected', '')}",
        )
    return f"{source}: '{key}' = {err.get('input')!r}: {err['msg']}{more}", "fix this value"


def _fields_at(path: list[str]) -> list[str]:
    model: Any = RunConfig
    for part in path:
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return sorted(model.model_fields)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def expand_globs(patterns: list[str]) -> list[Path]:
    """Files matching the patterns (`**` allowed), sorted, without duplicates."""
    found: dict[str, Path] = {}
    for pattern in patterns:
        for name in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
            if os.path.isfile(name):
                found.setdefault(os.path.realpath(name), Path(name))
    return list(found.values())


def missing_inputs(cfg: RunConfig) -> list[str]:
    """The data patterns of a config that match no file (empty when everything is there)."""
    replay = cfg.data.self_replay
    prompts = [replay.prompts] if replay.enabled and replay.prompts else []
    return [p for p in (*cfg.data.chatml, *cfg.data.sources, *cfg.data.replay, *prompts) if not matches(p)]
