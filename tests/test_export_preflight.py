"""Export and training resource estimates, the refusals they lead to, and the streamed export stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from export_fixtures import make_adapter, make_trained_run, make_wide_model
from rich.console import Console

from bbjtune.config import load_config
from bbjtune.errors import BbjtuneError
from bbjtune.sizing import GiB, check_export, choose_merged, estimate_export
from bbjtune.models.architecture import QWEN25

SEVEN = QWEN25["7b"]
N7 = SEVEN.params


def test_quantized_only_streaming_counts_the_f16_intermediate_once():
    est = estimate_export(SEVEN, ["q8_0", "q4_k_m"], streaming=True, available_ram=64 * GiB)
    assert est.files == {"q8_0": int(N7 * 1.07), "q4_k_m": int(N7 * 0.61)}
    assert list(est.scratch.values()) == [N7 * 2]  # llama.cpp's f16 input, nothing else
    assert est.disk_peak == int(N7 * 1.07) + int(N7 * 0.61) + N7 * 2
    assert est.merged == 0 and est.path == "stream"
    # the streaming write holds tensors, not the model: below the 14 GiB of 7B weights in bf16
    assert est.ram["merge+write"] < N7 * 2
    # about the same for 14B and 32B: the same embedding matrix; 64 layers instead of 48 add nothing, only
    # the wider MLP matrices the writer prepares beside it (ENCODE_WORKERS at once) add a little
    ram = [estimate_export(QWEN25[s], ["q8_0"], streaming=True).ram["merge+write"] for s in ("14b", "32b")]
    assert ram[0] < ram[1] < ram[0] + 3 * GiB and ram[1] < QWEN25["14b"].params * 2
    assert est.verify_reference == "hf"  # 64 GiB hold the 7B model in float32


def test_asked_f16_is_not_counted_twice_and_the_hf_path_counts_merged():
    est = estimate_export(SEVEN, ["f16", "q4_k_m"], streaming=False, keep_merged=True, merge_bytes=2)
    assert est.scratch == {} and est.merged == N7 * 2
    assert est.disk_peak == N7 * 2 + int(N7 * 0.61) + N7 * 2
    assert est.ram["merge"] > N7 * 2  # the whole model in the merge dtype
    temp = estimate_export(SEVEN, ["f16"], streaming=False, keep_merged=False)
    assert temp.merged == 0 and temp.scratch == {"merged/ (temporary)": N7 * 2}


def test_the_gguf_lora_base_reuses_the_space_of_the_deleted_intermediate():
    plain = estimate_export(SEVEN, ["q4_k_m"], streaming=True)
    lora = estimate_export(SEVEN, ["q4_k_m"], streaming=True, lora_gguf=True)
    assert lora.disk_peak == plain.disk_peak  # f16 scratch (2 B/param) is gone before the base f16 is written


def test_verification_switches_to_a_gguf_reference_when_ram_is_short():
    est = estimate_export(SEVEN, ["q8_0"], streaming=True, available_ram=24 * GiB)
    assert est.verify_reference == "gguf"
    assert est.scratch == {"f16 (verification reference)": N7 * 2}  # written only to compare with
    assert est.ram["verify"] < 24 * GiB


def test_refusal_says_needed_free_and_what_to_change(tmp_path):
    est = estimate_export(SEVEN, ["f16", "q8_0", "q4_k_m"], streaming=True, available_ram=64 * GiB)
    with pytest.raises(BbjtuneError) as err:
        check_export(tmp_path / "export", est, free=20 * GiB, ram=64 * GiB)
    text = str(err.value)
    assert "GiB needed" in text and "20.0 GiB free" in text and "q4_k_m" in text
    assert "export.gguf" in err.value.hint
    hf = estimate_export(SEVEN, ["q4_k_m"], streaming=False, keep_merged=True)
    with pytest.raises(BbjtuneError, match="RAM for the export's merge step") as err:
        check_export(tmp_path / "export", hf, free=10**15, ram=24 * GiB)
    assert "24.0 GiB available" in str(err.value) and "export.merged: false" in err.value.hint
    # streaming fits the same machine; a thin disk margin is a warning, not a refusal
    fits = estimate_export(SEVEN, ["q4_k_m"], streaming=True, available_ram=24 * GiB)
    warnings = check_export(tmp_path / "export", fits, free=int(fits.disk_peak * 1.08), ram=24 * GiB)
    assert any("disk is tight" in w for w in warnings)
    assert check_export(tmp_path / "export", fits, free=10**15, ram=10**15) == []
    assert not (tmp_path / "export").exists()


def test_train_estimate_counts_the_merged_stage_one_model_and_cpu_ram(tmp_path):
    from bbjtune.train.resources import check_train, estimate_train

    cfg = load_config("qwen2.5-coder-7b-base", [f"output_dir={tmp_path}/{{name}}"])
    needs = estimate_train(cfg, SEVEN, ["cpt", "sft"], cuda=True)
    assert needs.parts["cpt/merged (16-bit)"] == N7 * 2 and needs.ram is None
    lora = 28 * 32 * (2 * (3584 + 3584) + 2 * (3584 + 512) + 3 * (3584 + 18944))  # r=32 on all linear layers
    # two stages, each: the adapter and two checkpoints of adapter + Adam's two moments (float32)
    assert needs.parts["adapters and checkpoints"] == 2 * lora * 4 * (1 + 3 * 2)
    with pytest.raises(BbjtuneError, match="not enough disk space to train") as err:
        check_train(cfg, SEVEN, ["cpt", "sft"], cuda=True, free=5 * GiB)
    assert "cpt/merged" in str(err.value) and "5.0 GiB free" in str(err.value)
    with pytest.raises(BbjtuneError, match="RAM to train on the CPU") as err:
        check_train(cfg, SEVEN, ["sft"], cuda=False, free=10**15, ram=8 * GiB)
    assert "bfloat16" in str(err.value) and "GPU" in err.value.hint
    assert check_train(cfg, SEVEN, ["sft"], cuda=True, free=10**15).ram is None


def test_train_estimate_holds_one_start_model_at_a_time_when_they_are_released(tmp_path):
    from bbjtune.train.resources import estimate_train

    stages = ["cpt", "sft", "rft", "dpo"]
    cfg = load_config(
        "qwen2.5-coder-7b-base", [f"output_dir={tmp_path}/{{name}}", f"train.stages=[{', '.join(stages)}]"]
    )
    cfg.train.rft.sampling.rounds = 2
    kept = estimate_train(cfg, SEVEN, stages, cuda=True)
    assert (
        kept.parts["cpt/merged (16-bit)"] == N7 * 2 and kept.parts["self-training start models"] == 3 * N7 * 2
    )
    cfg.train.keep_round_models = False
    one = estimate_train(cfg, SEVEN, stages, cuda=True)
    assert one.parts["self-training start models, one at a time"] == N7 * 2
    assert kept.disk - one.disk == 2 * N7 * 2
    cfg.train.cpt.keep_merged = False  # stage 1's merged model goes before the first start is merged
    least = estimate_train(cfg, SEVEN, stages, cuda=True)
    assert least.parts == {
        "cpt/merged, then one self-training start at a time (16-bit)": N7 * 2,
        "adapters and checkpoints": one.parts["adapters and checkpoints"],
    }


def test_dry_run_line_names_what_training_writes(tmp_path):
    from rich.console import Console

    from bbjtune.train.resources import show_train_disk

    cfg = load_config(
        "qwen2.5-coder-14b-base",
        [
            f"output_dir={tmp_path}/{{name}}",
            "train.stages=[cpt, sft, rft, dpo]",
            "train.keep_round_models=false",
        ],
    )
    console = Console(record=True, width=400)
    show_train_disk(cfg, ["cpt", "sft", "rft", "dpo"], console)
    text = console.export_text()
    # 14.8e9 parameters x 2 bytes: stage 1's merged model and one start model at a time
    assert "cpt/merged (16-bit) 27.5" in text and "self-training start models, one at a time 27.5" in text
    assert text.startswith("disk: training writes about 69.4 GiB") and "GiB free there" in text


def test_dry_run_prints_the_export_estimate(tmp_path):
    from bbjtune.train.dryrun import _show_export

    cfg = load_config(
        "qwen2.5-coder-32b-instruct",
        [f"output_dir={tmp_path}/{{name}}", "export.merged=false", "export.gguf=[f16, q8_0, q4_k_m]"],
    )
    console = Console(record=True, width=200)
    _show_export(cfg, console)
    text = console.export_text()
    assert "streamed merge" in text and "q4_k_m GGUF" in text and "f16 GGUF" in text and "peak" in text
    n = QWEN25["32b"].params
    assert f"{n * 0.61 / GiB:.1f}" in text  # the q4_k_m size in GiB
    assert "GiB RAM available" in text


def test_merged_auto_keeps_merged_only_where_disk_and_ram_hold_it():
    """The 14B rehearsal on a 64 GiB disk: the shipped preset asked for merged/ and export refused after
    training (53.2 GiB needed, 35.6 free). auto streams there instead, and says why."""
    fourteen = QWEN25["14b"]

    def estimate(keep):
        return estimate_export(
            fourteen, ["q8_0", "q4_k_m"], streaming=not keep, keep_merged=keep, kquant_source="q8_0"
        )

    roomy = choose_merged("auto", free=500 * GiB, ram=128 * GiB, estimate=estimate)
    assert roomy == (True, None)
    keep, why = choose_merged("auto", free=int(35.6 * GiB), ram=128 * GiB, estimate=estimate)
    assert keep is False and "35.6 GiB of free disk cannot hold merged/ (27.5 GiB)" in why
    # the streamed route it falls back to fits the same disk: check_export does not refuse it
    check_export(Path("/nonexistent/x"), estimate(False), free=int(35.6 * GiB), ram=128 * GiB)
    keep, why = choose_merged("auto", free=500 * GiB, ram=16 * GiB, estimate=estimate)
    assert keep is False and "16.0 GiB of RAM cannot merge the whole model" in why
    # an explicit setting is obeyed, whatever the machine
    assert choose_merged(True, free=0, ram=0, estimate=estimate) == (True, None)
    assert choose_merged(False, free=500 * GiB, ram=128 * GiB, estimate=estimate) == (False, None)


def test_dry_run_says_when_merged_auto_will_stream(tmp_path, monkeypatch):
    from bbjtune.train import dryrun

    cfg = load_config("qwen2.5-coder-14b-base", [f"output_dir={tmp_path}/{{name}}"])
    assert cfg.export.merged == "auto"
    monkeypatch.setattr(dryrun, "free_disk", lambda where: 40 * GiB)
    monkeypatch.setattr(dryrun, "available_ram", lambda: 128 * GiB)
    console = Console(record=True, width=240)
    dryrun._show_export(cfg, console)
    text = console.export_text()
    assert "export.merged: auto → no merged/ on this machine" in text and "streamed merge" in text


# ----------------------------------------------------------------------------- the streamed stage


@pytest.fixture(scope="module")
def streamed(tiny_model_dir, tmp_path_factory):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from bbjtune.export.stage import run_stage

    tmp = tmp_path_factory.mktemp("streamed")
    cfg = load_config(
        "quickstart",
        [f"output_dir={tmp}/runs/{{name}}", "export.merged=false", "export.gguf=[q8_0, q4_k_m]"],
    )
    adapter = make_adapter(
        tiny_model_dir, cfg.train_dir / "sft" / "adapter", seed=7, trainable_token_indices=[3]
    )
    make_trained_run(cfg.train_dir, str(tiny_model_dir), adapter, tiny_model_dir, stages=("sft",))
    return cfg, run_stage(cfg)


def test_streamed_export_writes_only_the_asked_files(streamed):
    cfg, out = streamed
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["Modelfile", "vllm-lora.json", "verify.json", "manifest.json"]
        + [f"{cfg.name}.q8_0.gguf", f"{cfg.name}.q4_k_m.gguf"]
    )  # no merged/, no f16 intermediate left behind
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["merge_path"]["path"] == "stream"
    assert manifest["estimate"]["scratch_gib"] and "merge_s" not in manifest["timings"]
    verify = json.loads((out / "verify.json").read_text())
    assert verify["ok"] and verify["reference_kind"] == "hf" and "merged in memory" in verify["reference"]


def test_streamed_q8_0_equals_the_hf_path_q8_0(streamed, tmp_path):
    import gguf

    from bbjtune.export.gguf import write_gguf
    from bbjtune.export.merge import merge, plan_from_trained

    cfg, out = streamed
    merged = merge(plan_from_trained(cfg.train_dir), tmp_path / "merged")
    hf = write_gguf(merged, tmp_path / "hf.q8_0.gguf", "q8_0", name=cfg.name)
    a = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(hf)).tensors}
    b = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(out / f"{cfg.name}.q8_0.gguf")).tensors}
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_quantized_files_verified_against_the_f16_gguf(tiny_model_dir, tmp_path):
    """The reference when the HF model does not fit in RAM: a 16-bit GGUF run by llama.cpp."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from bbjtune.export.gguf import write_gguf
    from bbjtune.export.quantize import quantize
    from bbjtune.export.verify import verify_all

    wide = make_wide_model(tiny_model_dir, tmp_path / "wide")
    f16 = write_gguf(wide, tmp_path / "m.f16.gguf", "f16")
    files = {
        "f16": f16,
        "q8_0": write_gguf(wide, tmp_path / "m.q8_0.gguf", "q8_0"),
        "q4_k_m": quantize(f16, tmp_path / "m.q4_k_m.gguf", "q4_k_m"),
    }
    report = verify_all(wide, files, reference_gguf=("f16", f16), why="no RAM (test)")
    assert report["reference_kind"] == "gguf" and report["reference"] == "m.f16.gguf"
    assert report["reference_why"] == "no RAM (test)"
    assert report["results"]["f16"]["reference"] and report["results"]["f16"]["tokenization_identical"]
    q8 = report["results"]["q8_0"]
    assert q8["ok"] and 0 < q8["max_rel_diff"] < 0.8 and q8["top1_agreement"] >= 0.93
    q4 = report["results"]["q4_k_m"]
    assert q4["max_rel_diff"] > q8["max_rel_diff"]  # coarser rounding, measurably further from the f16
    # a wrong file is caught against the GGUF reference just as against the HF model
    other = make_wide_model(tiny_model_dir, tmp_path / "other", seed=1)
    wrong = write_gguf(other, tmp_path / "wrong.q8_0.gguf", "q8_0")
    bad = verify_all(wide, {"q8_0": wrong}, reference_gguf=("f16", f16), why="test")
    assert not bad["ok"] and bad["results"]["q8_0"]["failures"]


def test_train_refuses_before_loading_a_model_when_the_disk_is_full(tmp_path, tiny_model_dir, monkeypatch):
    """The check runs in `bbjtune train` itself, before the model is loaded or any stage directory made."""
    from train_helpers import make_config, write_data

    from bbjtune.train import resources
    from bbjtune.train.stage import run_stage

    write_data(tmp_path / "data", n_train=4)
    cfg = make_config(tmp_path, tiny_model_dir, train__sft__max_steps=1)
    monkeypatch.setattr(resources, "free_disk", lambda where: 0)  # this machine's disk, as if full
    with pytest.raises(BbjtuneError, match="not enough disk space to train") as err:
        run_stage(cfg, console=Console(stderr=True, quiet=True))
    assert "0.0 GiB free" in str(err.value) and "output_dir" in err.value.hint
    assert not (cfg.train_dir / "sft").exists()


def _streamed_run(model, runs, gguf: str, *overrides: str):
    """A quickstart config exporting `gguf` streamed, with a trained run of a small adapter on `model`."""
    cfg = load_config(
        "quickstart",
        [f"output_dir={runs}/{{name}}", "export.merged=false", f"export.gguf={gguf}", *overrides],
    )
    adapter = make_adapter(model, cfg.train_dir / "sft" / "adapter", seed=3, scale=0.01)
    make_trained_run(cfg.train_dir, str(model), adapter, model, stages=("sft",))
    return cfg, adapter


def test_streamed_export_verifies_against_a_temporary_f16_when_ram_is_short(
    tiny_model_dir, tmp_path, monkeypatch
):
    """RAM enough to stream but not to hold the merged model in float32: the f16 GGUF is the reference."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from bbjtune.export import stage
    from bbjtune.sizing import BASELINE_RAM
    from bbjtune.models.loading import architecture_of

    from bbjtune import sizing

    # one tensor prepared at a time: in this one-layer model the layer matrices prepared beside the
    # embeddings would weigh as much as the model itself, which no real model comes near
    monkeypatch.setattr(sizing, "ENCODE_WORKERS", 1)
    wide = make_wide_model(tiny_model_dir, tmp_path / "wide")
    arch = architecture_of(str(wide))
    stream = estimate_export(arch, ["q4_k_m"], streaming=True, verify=False).ram_peak
    hf = BASELINE_RAM + int(arch.params * 4 * 1.05)
    assert stream < hf
    monkeypatch.setattr(stage, "available_ram", lambda: (stream + hf) // 2)  # this machine's RAM, as if small
    cfg, _ = _streamed_run(wide, tmp_path / "runs", "[q4_k_m]")
    try:
        out = stage.run_stage(cfg)
    except BbjtuneError as exc:  # a verdict is not what this test is about; the report must exist
        assert "verification failed" in str(exc)
        out = cfg.export_dir
    verify = json.loads((out / "verify.json").read_text())
    assert verify["reference_kind"] == "gguf" and verify["reference"] == f"{cfg.name}.f16.gguf"
    assert "float32" in verify["reference_why"] and verify["reference_tokenization_identical"]
    assert list(verify["results"]) == ["q4_k_m"] and verify["results"]["q4_k_m"]["positions"] > 0
    assert sorted(p.name for p in out.glob("*.gguf")) == [f"{cfg.name}.q4_k_m.gguf"]  # f16 was temporary
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["estimate"]["verify_reference"] == "gguf"


def test_a_q8_0_kquant_source_needs_no_f16_on_disk():
    f16 = estimate_export(SEVEN, ["q8_0", "q4_k_m"], streaming=True, available_ram=64 * GiB)
    q8 = estimate_export(
        SEVEN, ["q8_0", "q4_k_m"], streaming=True, available_ram=64 * GiB, kquant_source="q8_0"
    )
    assert q8.scratch == {} and q8.disk_peak == f16.disk_peak - N7 * 2  # the asked q8_0 is the input
    alone = estimate_export(SEVEN, ["q4_k_m"], streaming=True, available_ram=64 * GiB, kquant_source="q8_0")
    assert alone.scratch == {"q8_0 (llama.cpp's input)": int(N7 * 1.07)}


def test_export_quantizes_from_q8_0_when_the_disk_cannot_hold_the_f16(tiny_model_dir, tmp_path, monkeypatch):
    """auto: the disk fits the q8_0 route, not the f16 one; the k-quant comes from the q8_0 file, said so."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from bbjtune.export import stage
    from bbjtune.models.loading import architecture_of
    from bbjtune.sizing import DISK_MARGIN

    wide = make_wide_model(tiny_model_dir, tmp_path / "wide")
    arch = architecture_of(str(wide))
    peaks = [
        estimate_export(arch, ["q8_0", "q4_k_m"], streaming=True, kquant_source=s).disk_peak
        for s in ("f16", "q8_0")
    ]
    monkeypatch.setattr(stage, "free_disk", lambda where: int(sum(peaks) / 2 * DISK_MARGIN))
    monkeypatch.setattr("bbjtune.sizing.free_disk", lambda where: int(sum(peaks) / 2 * DISK_MARGIN))
    cfg, adapter = _streamed_run(wide, tmp_path / "runs", "[q8_0, q4_k_m]")
    try:
        out = stage.run_stage(cfg)
    except BbjtuneError as exc:  # the verdict on a tiny random model is not the point here
        assert "verification failed" in str(exc)
        out = cfg.export_dir
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kquant_source"] == "q8_0" and manifest["estimate"]["scratch_gib"] in (0, 0.0, {}, None)
    assert sorted(p.name for p in out.glob("*.gguf")) == [f"{cfg.name}.q4_k_m.gguf", f"{cfg.name}.q8_0.gguf"]
    verify = json.loads((out / "verify.json").read_text())
    q4, q8 = verify["results"]["q4_k_m"], verify["results"]["q8_0"]
    assert q4["tokenization_identical"] and q4["positions"] > 0
    assert q4["max_rel_diff"] > q8["max_rel_diff"]  # a real 4-bit file, further from the model than its input
    # asked explicitly, the f16 route stays even when the disk is short: the refusal names the way out
    cfg16, _ = _streamed_run(wide, tmp_path / "runs16", "[q8_0, q4_k_m]", "export.kquant_source=f16")
    with pytest.raises(BbjtuneError, match="kquant_source: q8_0"):
        stage.run_stage(cfg16)


def test_auto_kquant_source_takes_q8_0_only_where_f16_does_not_fit_and_q8_0_does():
    from bbjtune.sizing import DISK_MARGIN, choose_kquant_source

    def estimate(source):
        return estimate_export(
            SEVEN, ["q8_0", "q4_k_m"], streaming=True, available_ram=64 * GiB, kquant_source=source
        )

    f16, q8 = estimate("f16").disk_peak, estimate("q8_0").disk_peak
    quants = ["q8_0", "q4_k_m"]
    assert choose_kquant_source("auto", quants, 10**15, estimate)[0] == "f16"  # room: llama.cpp's usual input
    source, est = choose_kquant_source("auto", quants, int((f16 + q8) / 2 * DISK_MARGIN), estimate)
    assert source == "q8_0" and est.disk_peak == q8
    assert (
        choose_kquant_source("auto", quants, 0, estimate)[0] == "f16"
    )  # neither fits: export refuses on f16
    assert choose_kquant_source("f16", quants, int((f16 + q8) / 2 * DISK_MARGIN), estimate)[0] == "f16"
    assert choose_kquant_source("auto", ["f16", "q4_k_m"], 0, estimate)[0] == "f16"  # f16 is written anyway


def test_merged_auto_streams_where_the_disk_cannot_hold_merged(tiny_model_dir, tmp_path, monkeypatch):
    """export.merged: auto (the default) on a disk that holds the GGUF files but not merged/ beside them:
    export streams instead of refusing, says so, and the manifest records why."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from bbjtune.export import stage
    from bbjtune.models.loading import architecture_of
    from bbjtune.sizing import DISK_MARGIN

    cfg, _ = _streamed_run(
        tiny_model_dir, tmp_path / "runs", "[q8_0]", "export.merged=auto", "export.ollama.quant=q8_0"
    )
    arch = architecture_of(str(tiny_model_dir))
    with_merged = estimate_export(arch, ["q8_0"], streaming=False, keep_merged=True, merge_bytes=4)
    streamed = estimate_export(arch, ["q8_0"], streaming=True)
    assert streamed.disk_peak < with_merged.disk_peak
    free = int((streamed.disk_peak + with_merged.disk_peak) / 2 * DISK_MARGIN)  # between the two
    monkeypatch.setattr(stage, "free_disk", lambda where: free)
    out = stage.run_stage(cfg)
    assert not (out / "merged").exists() and (out / f"{cfg.name}.q8_0.gguf").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["merge_path"]["path"] == "stream"
        and "export.merged: auto" in manifest["merge_path"]["reason"]
    )
    assert "cannot hold merged/" in manifest["merge_path"]["reason"]
    assert "merged/" not in manifest["outputs"]
