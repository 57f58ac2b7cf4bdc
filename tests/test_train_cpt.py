"""Stage 1 (CPT) and the chain to stage 2 on the tiny model; QLoRA through bitsandbytes on CPU."""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console
from train_helpers import make_config, padding_start, write_data

from bbjtune.models import load_model, load_tokenizer
from bbjtune.train.stage import run_stage

pytestmark = pytest.mark.slow  # trains tiny models: `make test` runs it, `make test-fast` leaves it out

QUIET = Console(stderr=True, quiet=True)


def test_cpt_trains_on_every_token_and_merges(tmp_path, tiny_model_dir):
    from bbjtune.train import cpt
    from bbjtune.train.job import StageJob
    from bbjtune.train.model_io import load_training_tokenizer
    from bbjtune.train.trainer import make_trainer
    from bbjtune.train.inputs import load_training_data

    write_data(tmp_path / "data", n_cpt=12)
    cfg = make_config(
        tmp_path,
        tiny_model_dir,
        train__stages="cpt",
        train__cpt__epochs=4,
        train__cpt__learning_rate=1e-2,
        train__cpt__train_embeddings=True,
    )
    # the prepared rows: every token is a target except the first of each packed document
    data = load_training_data(cfg.data_dir, ["cpt"])
    job = StageJob(cfg=cfg, stage="cpt", base_source=cfg.model.source, backend="hf", console=QUIET)
    tokenizer = load_training_tokenizer(cfg.model.source)
    model, settings, _ = cpt._setup_model(job)
    train, heldout, _ = cpt._setup_data(data)
    assert heldout is not None and len(heldout) == 4  # the held-out answers' code
    args = cpt.arguments(job, has_eval=True)
    trainer = make_trainer(job, model, tokenizer, args, train, heldout, settings, callbacks=[])
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels, pos = batch["input_ids"], batch["labels"], batch["position_ids"]
    firsts = pos == 0
    padding = torch.zeros_like(
        firsts
    )  # a short row's tail: no labels, positions continuing its last document
    for r in range(ids.shape[0]):
        end = padding_start(ids[r], labels[r], tokenizer.pad_token_id)
        padding[r, end:] = True
        assert pos[r, end:].tolist() == list(
            range(pos[r, end - 1] + 1, pos[r, end - 1] + 1 + ids.shape[1] - end)
        )
    assert not (firsts & padding).any()
    targets = ~firsts & ~padding
    assert (labels[targets] == ids[targets]).all()
    assert (labels[firsts] == -100).all()
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") in batch["input_ids"]  # documents end with EOS

    run_stage(cfg, console=QUIET)
    metrics = json.loads((cfg.train_dir / "cpt" / "manifest.json").read_text())["metrics"]
    assert metrics["final_loss"] < metrics["first_loss"] - 0.3
    handle = json.loads((cfg.train_dir / "trained.json").read_text())
    assert handle["stages"] == ["cpt"] and handle["trainable_token_indices"] is None
    assert handle["modules_to_save"] == ["embed_tokens"]  # served only after the merge below

    # the merged 16-bit model computes what base + adapter computes
    from bbjtune.models.trained import load_trained

    with_adapter, tok = load_trained(cfg.train_dir)
    merged = load_model(str(cfg.train_dir / "cpt" / "merged"), dtype="float32").eval()
    ids = tok('print "hello"\nfor i = 1 to 3', return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(with_adapter(ids).logits, merged(ids).logits, atol=1e-4)
        base = load_model(str(tiny_model_dir), dtype="float32").eval()
        assert not torch.allclose(base(ids).logits, merged(ids).logits, atol=1e-3)


def test_cpt_embeddings_train_with_their_own_learning_rate(tmp_path, tiny_model_dir):
    from bbjtune.train import cpt
    from bbjtune.train.job import StageJob
    from bbjtune.train.model_io import load_training_tokenizer
    from bbjtune.train.trainer import make_trainer
    from bbjtune.train.inputs import load_training_data

    write_data(tmp_path / "data", n_cpt=8)
    cfg = make_config(
        tmp_path,
        tiny_model_dir,
        train__stages="cpt",
        train__cpt__train_embeddings=True,
        train__cpt__embedding_learning_rate=1e-3,
    )
    data = load_training_data(cfg.data_dir, ["cpt"])
    job = StageJob(cfg=cfg, stage="cpt", base_source=cfg.model.source, backend="hf", console=QUIET)
    model, settings, _ = cpt._setup_model(job)
    assert settings["modules_to_save"] == ["embed_tokens"]  # tied lm_head follows the embedding
    train, _, _ = cpt._setup_data(data)
    args = cpt.arguments(job, has_eval=False)
    trainer = make_trainer(
        job,
        model,
        load_training_tokenizer(cfg.model.source),
        args,
        train,
        None,
        settings,
        callbacks=[],
        embedding_lr=1e-3,
    )
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    rates = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            rates[names[id(p)]] = group["lr"]
    embedding = [n for n in rates if "modules_to_save" in n]
    assert embedding and all(rates[n] == 1e-3 for n in embedding)
    assert all(rate == cfg.train.cpt.learning_rate for n, rate in rates.items() if "lora_" in n)


def test_all_runs_cpt_then_sft_on_the_merged_model(tmp_path, tiny_model_dir):
    write_data(tmp_path / "data")
    cfg = make_config(
        tmp_path, tiny_model_dir, train__stages="all", train__cpt__max_steps=3, train__sft__max_steps=3
    )
    assert cfg.train_stages == ["cpt", "sft"]
    run_stage(cfg, console=QUIET)
    handle = json.loads((cfg.train_dir / "trained.json").read_text())
    merged = cfg.train_dir / "cpt" / "merged"
    assert handle["stages"] == ["cpt", "sft"]
    assert handle["base_model"] == str(merged.resolve()) and handle["original_model"] == str(tiny_model_dir)
    assert handle["adapter"] == str((cfg.train_dir / "sft" / "adapter").resolve())
    adapter_cfg = json.loads((cfg.train_dir / "sft" / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(merged)
    assert (merged / "model.safetensors").exists() and load_tokenizer(str(merged)).chat_template
    stages = [
        json.loads(line)["stage"] for line in (cfg.train_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert stages.index("sft") > stages.index("cpt") and set(stages) == {"cpt", "sft"}

    # unchanged settings and data: nothing is trained again
    before = (cfg.train_dir / "sft" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    run_stage(cfg, console=QUIET)
    assert (cfg.train_dir / "sft" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == before


def test_qlora_on_cpu_with_bitsandbytes(tmp_path, tiny_model_dir):
    """QLoRA: nf4 + double-quantized frozen weights (bitsandbytes' CPU backend), bf16 LoRA, 8-bit AdamW."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    from bbjtune.train import sft
    from bbjtune.train.job import StageJob
    from bbjtune.train.model_io import load_training_tokenizer
    from bbjtune.train.trainer import optimizer_name
    from bbjtune.train.inputs import load_training_data

    write_data(tmp_path / "data", n_train=12)
    cfg = make_config(
        tmp_path,
        tiny_model_dir,
        train__quantization__load_in_4bit=True,
        train__optim="paged_adamw_8bit",
        train__sft__max_steps=6,
        train__sft__learning_rate=1e-2,
    )
    assert optimizer_name(cfg) == "adamw_8bit"  # paging is a GPU feature
    job = StageJob(cfg=cfg, stage="sft", base_source=cfg.model.source, backend="hf", console=QUIET)
    tokenizer = load_training_tokenizer(cfg.model.source)
    model, _, _ = sft._setup_model(job, tokenizer)
    linear = model.model.layers[0].mlp.up_proj
    assert isinstance(linear, bnb.nn.Linear4bit)
    assert linear.weight.quant_state.quant_type == "nf4" and linear.weight.quant_state.nested  # double quant
    del model, load_training_data

    run_stage(cfg, console=QUIET)
    manifest = json.loads((cfg.train_dir / "sft" / "manifest.json").read_text())
    assert manifest["metrics"]["final_loss"] < manifest["metrics"]["first_loss"]
    # the adapter loads on the 16-bit base for evaluation/export
    from bbjtune.models.trained import load_trained

    model, tok = load_trained(cfg.train_dir, dtype="float32", merge=True)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    ids = tok("print 1", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_untied_model_trains_chat_token_rows_in_embedding_and_head(tmp_path, tiny_model_dir):
    """Qwen2.5-Coder 7B/14B/32B do not tie lm_head to the embedding: both get their chat-token rows trained."""
    from bbjtune.models.trained import load_trained

    model = load_model(str(tiny_model_dir), dtype="float32")
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    model.save_pretrained(tmp_path / "untied")
    load_tokenizer(str(tiny_model_dir)).save_pretrained(tmp_path / "untied")

    write_data(tmp_path / "data", n_train=8)
    cfg = make_config(tmp_path, tmp_path / "untied", train__sft__max_steps=3, train__sft__learning_rate=1e-2)
    run_stage(cfg, console=QUIET)
    handle = json.loads((cfg.train_dir / "trained.json").read_text())
    ids = handle["trainable_token_indices"]
    merged, _ = load_trained(cfg.train_dir, dtype="float32", merge=True)
    base = load_model(str(tmp_path / "untied"), dtype="float32")
    for name in ("get_input_embeddings", "get_output_embeddings"):
        before, after = getattr(base, name)().weight, getattr(merged, name)().weight
        assert not torch.allclose(before[ids], after[ids])  # the chat-token rows trained...
        others = [i for i in range(50)]
        assert torch.equal(before[others], after[others])  # ...and nothing else in the matrix


def test_released_stage_one_model_is_folded_in_on_the_fly_and_rebuilt_when_needed(tmp_path, tiny_model_dir):
    """train.cpt.keep_merged: false — no cpt/merged on disk; the same model for evaluation and export."""
    from bbjtune.export.merge import plan_from_trained
    from bbjtune.models.trained import load_trained, read_trained

    write_data(tmp_path / "data")
    cfg = make_config(
        tmp_path, tiny_model_dir, train__stages="all", train__cpt__max_steps=3, train__sft__max_steps=3
    )
    run_stage(cfg, console=QUIET)
    ids = load_tokenizer(str(tiny_model_dir))("10 PRINT X", return_tensors="pt").input_ids
    with torch.no_grad():
        kept = load_trained(cfg.train_dir, dtype="float32", merge=True)[0](ids).logits
    merged = cfg.train_dir / "cpt" / "merged"
    sft_before = (cfg.train_dir / "sft" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns

    released = cfg.model_copy(deep=True)
    released.train.cpt.keep_merged = False
    run_stage(released, console=QUIET)  # nothing to train again; stage 1's merged model goes
    assert not merged.exists()
    assert (cfg.train_dir / "sft" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == sft_before
    trained = read_trained(cfg.train_dir)
    assert trained.base_model == str(tiny_model_dir) and trained.needs_merge
    assert trained.adapters == [(cfg.train_dir / "cpt" / "adapter").resolve(), trained.adapter]
    assert plan_from_trained(cfg.train_dir).adapters == trained.adapters  # export folds both in, in order
    with torch.no_grad():
        on_the_fly = load_trained(cfg.train_dir, dtype="float32", merge=True)[0](ids).logits
    assert torch.allclose(on_the_fly, kept, atol=1e-4), (on_the_fly - kept).abs().max()

    run_stage(released, console=QUIET)  # a second run keeps trained.json pointing at what exists
    assert read_trained(cfg.train_dir).base_model == str(tiny_model_dir) and not merged.exists()

    # stage 2 trained again (new settings) needs the merged model: it is rebuilt first
    again = released.model_copy(deep=True)
    again.train.sft.max_steps = 4
    again.train.cpt.keep_merged = True
    run_stage(again, console=QUIET)
    assert (merged / "config.json").exists() and read_trained(cfg.train_dir).base_model == str(
        merged.resolve()
    )
    assert (cfg.train_dir / "sft" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns != sft_before
