"""Stage 1's fill-in-the-middle samples: Qwen2.5-Coder's token layout, the split, and what the loss covers."""

from __future__ import annotations

import json
import random

import pytest
import torch
from rich.console import Console
from train_helpers import make_config, write_data

from bbjtune.models.fim import (
    FILE_SEP,
    FIM_MIDDLE,
    FIM_PREFIX,
    FIM_SUFFIX,
    REPO_NAME,
    fim_prompt,
    psm_sample,
    spm_sample,
)
from bbjtune.train.fim import FimSettings, fim_documents, split_document

QUIET = Console(stderr=True, quiet=True)
PROGRAM = "rem count\nfor i = 1 to 10\n  print i\nnext i\nend\n"


def always_fits(texts: list[str]) -> list[bool]:
    return [True] * len(texts)


def test_psm_and_spm_token_layout(tiny_model_dir):
    from bbjtune.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    ids = {t: tok.convert_tokens_to_ids(t) for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, "<|endoftext|>")}
    assert len(set(ids.values())) == 4 and tok.unk_token_id not in ids.values()
    prefix, middle, suffix = "for i = 1 to 10\n  ", "print i", "\nnext i\n"

    def enc(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    # PSM: <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> middle, each FIM marker one token
    assert (
        psm_sample(prefix, middle, suffix) == f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{middle}"
    )
    assert enc(psm_sample(prefix, middle, suffix)) == (
        [ids[FIM_PREFIX]] + enc(prefix) + [ids[FIM_SUFFIX]] + enc(suffix) + [ids[FIM_MIDDLE]] + enc(middle)
    )
    # the editor's prompt is the PSM sample without its middle
    assert psm_sample(prefix, middle, suffix).startswith(fim_prompt(prefix, suffix))
    # SPM (StarCoder's layout): <|fim_prefix|><|fim_suffix|> suffix <|fim_middle|> prefix+middle
    assert enc(spm_sample(prefix, middle, suffix)) == (
        [ids[FIM_PREFIX], ids[FIM_SUFFIX]] + enc(suffix) + [ids[FIM_MIDDLE]] + enc(prefix + middle)
    )


@pytest.mark.parametrize("line_level", [False, True])
def test_split_keeps_the_text_and_a_nonempty_middle(line_level):
    for seed in range(200):
        prefix, middle, suffix = split_document(PROGRAM, random.Random(seed), line_level)
        assert prefix + middle + suffix == PROGRAM and middle
        if line_level:  # cuts at line starts: the middle is whole lines
            assert prefix == "" or prefix.endswith("\n")
            assert middle.endswith("\n")
    assert split_document("x", random.Random(0), False) is None


def _restore(sample: str) -> str:
    """The original document from a PSM or SPM sample."""
    body = sample.split(REPO_NAME)[-1]
    body = body[body.index(FIM_PREFIX) :] if FIM_PREFIX in body else body
    if body.startswith(FIM_PREFIX + FIM_SUFFIX):  # SPM
        suffix, rest = body[len(FIM_PREFIX + FIM_SUFFIX) :].split(FIM_MIDDLE)
        return rest + suffix
    prefix, rest = body[len(FIM_PREFIX) :].split(FIM_SUFFIX)
    suffix, middle = rest.split(FIM_MIDDLE)
    return prefix + middle + suffix


def test_fim_documents_rate_layouts_and_determinism():
    texts = [PROGRAM.replace("10", str(n)) for n in range(400)]
    settings = FimSettings(rate=0.5, spm_rate=0.5, line_level_rate=0.5, seed=3)
    out, stats = fim_documents(texts, [None] * len(texts), settings, always_fits)
    fim = [o for o in out if o.startswith(FIM_PREFIX)]
    assert 160 <= len(fim) <= 240 and stats.to_dict()["fim_samples"] == len(fim)
    assert stats.fim["spm"] > 50 and stats.fim["psm"] > 50
    assert stats.fim["psm-line"] > 20 and stats.fim["psm-char"] > 20
    for original, sample in zip(texts, out):
        assert sample == original or _restore(sample) == original  # nothing lost, nothing added
    assert (
        fim_documents(texts, [None] * len(texts), settings, always_fits)[0] == out
    )  # same seed, same samples
    assert fim_documents(texts, [None] * len(texts), FimSettings(rate=0.5, seed=4), always_fits)[0] != out
    assert fim_documents(texts, [None] * len(texts), FimSettings(rate=0.0), always_fits)[0] == texts


def test_samples_that_do_not_fit_a_row_stay_plain():
    texts = [PROGRAM] * 20
    out, stats = fim_documents(texts, [None] * 20, FimSettings(rate=1.0), lambda ts: [False] * len(ts))
    assert out == texts and stats.kept_plain["too-long-with-fim-tokens"] == 20
    literal = [f'print "{FIM_MIDDLE}"\n']
    out, stats = fim_documents(literal, [None], FimSettings(rate=1.0), always_fits)
    assert out == literal and stats.kept_plain["contains-fim-token"] == 1


def test_repository_level_samples_use_files_of_the_same_folder():
    texts = ["rem a\nprint 1\n", "rem b\nprint 2\n", "rem c\nprint 3\n", "rem other\nprint 4\n"]
    sources = ["src/app/a.bbj", "src/app/b.bbj", "src/app/c.bbj", "lib/x.bbj"]
    out, stats = fim_documents(texts, sources, FimSettings(rate=1.0, repo_rate=1.0, seed=1), always_fits)
    first = out[0]
    assert first.startswith(f"{REPO_NAME}app\n{FILE_SEP}")
    lead, sample = first.split(FIM_PREFIX, 1)
    assert lead.endswith(f"{FILE_SEP}a.bbj\n")  # the file with the hole comes last, by path
    assert "rem b" in lead and "rem c" in lead and "rem other" not in lead
    assert _restore(FIM_PREFIX + sample) == texts[0]
    assert not out[3].startswith(REPO_NAME)  # alone in its folder: a plain FIM sample
    assert stats.fim["repo"] == 3
    # only as many sibling files as fit the row
    out, _ = fim_documents(
        texts,
        sources,
        FimSettings(rate=1.0, repo_rate=1.0, seed=1),
        lambda ts: [t.count(FILE_SEP) <= 2 for t in ts],
    )
    assert out[0].count(FILE_SEP) == 2


def test_loss_covers_the_whole_fim_sample_and_training_records_it(tmp_path, tiny_model_dir):
    from bbjtune.train import cpt
    from bbjtune.train.inputs import load_training_data
    from bbjtune.train.job import StageJob
    from bbjtune.train.model_io import load_training_tokenizer
    from bbjtune.train.trainer import make_trainer
    from bbjtune.train.stage import run_stage

    write_data(tmp_path / "data", n_cpt=12)
    cfg = make_config(
        tmp_path, tiny_model_dir, train__stages="cpt", train__cpt__fim_rate=1.0, train__cpt__max_steps=3
    )
    data = load_training_data(cfg.data_dir, ["cpt"])
    job = StageJob(cfg=cfg, stage="cpt", base_source=cfg.model.source, backend="hf", console=QUIET)
    tokenizer = load_training_tokenizer(cfg.model.source)
    train, _, stats = cpt._setup_data(data, job, tokenizer)
    assert stats["fim_samples"] == 12 and all(t.startswith(FIM_PREFIX) for t in train["text"])
    model, settings, _ = cpt._setup_model(job)
    args = cpt.arguments(job, has_eval=False)
    trainer = make_trainer(job, model, tokenizer, args, train, None, settings, callbacks=[])
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels, pos = batch["input_ids"], batch["labels"], batch["position_ids"]
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    mid, pre = tokenizer.convert_tokens_to_ids(FIM_MIDDLE), tokenizer.convert_tokens_to_ids(FIM_PREFIX)
    samples = 0
    for r in range(ids.shape[0]):
        for start in (pos[r] == 0).nonzero().flatten().tolist():
            if ids[r, start] != pre:
                continue  # padding continues positions, never restarts at 0 (packing.py)
            samples += 1
            end = start + (ids[r, start:] == eos).nonzero()[0].item()  # the sample's closing <|endoftext|>
            m = start + (ids[r, start:end] == mid).nonzero()[0].item()
            assert labels[r, start] == -100  # never predicted from the previous sample
            assert (
                labels[r, start + 1 : end + 1] == ids[r, start + 1 : end + 1]
            ).all()  # prefix, suffix, middle, EOS
            assert end > m + 1  # a non-empty middle is trained
    assert samples >= 4

    run_stage(cfg, console=QUIET)
    metrics = json.loads((cfg.train_dir / "cpt" / "manifest.json").read_text())["metrics"]
    assert metrics["fim"]["fim_samples"] == 12 and metrics["fim"]["documents"] == 12
    assert torch.isfinite(torch.tensor(metrics["final_loss"]))
