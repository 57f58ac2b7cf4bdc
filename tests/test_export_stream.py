"""The streaming merge (tensor by tensor into the GGUF writer) gives the HF merge's tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from export_fixtures import make_adapter, make_wide_model

from bbjtune.export.adapter import read_adapter
from bbjtune.export.gguf import gguf_tensor_name, write_gguf
from bbjtune.export.merge import MergePlan, merge
from bbjtune.export.stream import StreamedMerge, stream_blockers, write_model_files


def _bf16_copy(src, dst):
    """`src` saved in bfloat16 (as the published Qwen2.5 checkpoints are), so rounding is exercised."""
    from bbjtune.models import load_model

    model = load_model(str(src), dtype="float32").to(torch.bfloat16)
    model.save_pretrained(dst)
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens", "generation_config")):
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.fixture(scope="module")
def two_stage(tiny_model_dir, tmp_path_factory):
    """An untied bf16 base, a stage-1 adapter training embeddings and lm_head in full, a stage-2 adapter
    training token rows of both: what a cpt+sft run with trained special tokens hands to export."""
    root = tmp_path_factory.mktemp("stream")
    wide = make_wide_model(tiny_model_dir, root / "wide32")
    base = _bf16_copy(wide, root / "wide")
    first = make_adapter(base, root / "cpt", seed=4, modules_to_save=["embed_tokens", "lm_head"])
    rows = [3, 5, 4000, 7]
    second = make_adapter(
        base,
        root / "sft",
        seed=5,
        use_rslora=True,
        trainable_token_indices={"embed_tokens": rows, "lm_head": rows},
    )
    return base, [first, second]


def _gguf_arrays(path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {t.name: np.array(t.data) for t in reader.tensors}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_streamed_gguf_equals_hf_merged_gguf(two_stage, tmp_path, dtype):
    base, adapters = two_stage
    plan = MergePlan(base=str(base), adapters=adapters, chat=True)
    merged = merge(plan, tmp_path / "merged", dtype=dtype)
    via_hf = write_gguf(merged, tmp_path / "hf.f16.gguf", "f16", name="m")

    infos = [read_adapter(a) for a in adapters]
    assert stream_blockers(str(base), infos) == []
    meta = write_model_files(str(base), str(base), True, tmp_path / "meta")
    with StreamedMerge(str(base), infos, dtype=dtype) as streamed:
        via_stream = write_gguf(meta, tmp_path / "st.f16.gguf", "f16", name="m", tensors=streamed)

    want, got = _gguf_arrays(via_hf), _gguf_arrays(via_stream)
    assert sorted(want) == sorted(got)
    for name in want:
        assert np.array_equal(want[name], got[name]), name  # same arithmetic, same rounding: identical
    # and the adapters really changed the base, in every kind of tensor they train
    plain = _gguf_arrays(write_gguf(base, tmp_path / "base.f16.gguf", "f16", name="m"))
    for name in ("token_embd.weight", "output.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight"):
        assert not np.array_equal(plain[name], got[name]), name
    # metadata (tokenizer, stop ids, template) identical too
    import gguf

    def kv(path):
        r = gguf.GGUFReader(str(path))
        return {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}

    assert kv(via_hf) == kv(via_stream)


def test_streamed_rows_replace_only_the_trained_tokens(two_stage, tmp_path):
    base, adapters = two_stage
    infos = [read_adapter(adapters[1])]
    from safetensors import safe_open

    with safe_open(next(base.glob("*.safetensors")), framework="pt") as st:
        embed = st.get_tensor("model.embed_tokens.weight").float()
    with StreamedMerge(str(base), infos, dtype="float32") as streamed:
        got = streamed.get("model.embed_tokens.weight").float()
    changed = sorted(int(i) for i in torch.nonzero((got != embed).any(dim=1)).flatten())
    assert changed == [3, 5, 7, 4000]


def test_blockers_name_dora_and_non_local_bases(tiny_model_dir, tmp_path):
    dora = make_adapter(tiny_model_dir, tmp_path / "dora", use_dora=True)
    reasons = stream_blockers(str(tiny_model_dir), [read_adapter(dora)])
    assert any("DoRA" in r for r in reasons)
    plain = make_adapter(tiny_model_dir, tmp_path / "plain")
    assert stream_blockers(str(tiny_model_dir), [read_adapter(plain)]) == []
    assert stream_blockers("Qwen/Qwen2.5-Coder-7B", [read_adapter(plain)])  # a hub id: HF merge


def test_tied_base_lm_head_copy_is_refused(tiny_model_dir, tmp_path):
    assert json.loads((tiny_model_dir / "config.json").read_text())["tie_word_embeddings"]
    ad = make_adapter(tiny_model_dir, tmp_path / "ad", modules_to_save=["lm_head"])
    reasons = stream_blockers(str(tiny_model_dir), [read_adapter(ad)])
    assert any("lm_head" in r and "tied" in r for r in reasons)


def test_gguf_names_cover_every_streamed_tensor(two_stage):
    base, adapters = two_stage
    with StreamedMerge(str(base), [read_adapter(a) for a in adapters]) as streamed:
        assert all(gguf_tensor_name(n) for n in streamed.names)
        assert streamed.shape("model.embed_tokens.weight")[1] == 256
