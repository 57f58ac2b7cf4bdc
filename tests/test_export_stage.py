"""`bbjtune export` end to end on the tiny model: trained run → merged → GGUFs verified → Modelfile, vLLM."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from export_fixtures import SYSTEM_PROMPT, make_adapter, make_trained_run

from bbjtune.artifacts import read_manifest
from bbjtune.config import load_config
from bbjtune.errors import BbjtuneError
from bbjtune.models.architecture import read_gguf_metadata
from bbjtune.export.gotemplate import render_go_template
from bbjtune.export.modelfile import ollama_values, parse_modelfile
from bbjtune.models.chat_template import render_chatml

pytestmark = pytest.mark.slow  # trains tiny models: `make test` runs it, `make test-fast` leaves it out

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'bbjtune[export]')")


def _config(tmp_path, *extra):
    return load_config("quickstart", [f"output_dir={tmp_path}/runs/{{name}}", *extra])


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    from bbjtune.export.stage import run_stage

    tmp = tmp_path_factory.mktemp("stage")
    cfg = _config(tmp, "export.lora_gguf=true")
    adapter = make_adapter(tiny_model_dir, cfg.train_dir / "sft" / "adapter", seed=7)
    make_trained_run(cfg.train_dir, str(tiny_model_dir), adapter, tiny_model_dir, stages=("sft",))
    out = run_stage(cfg)
    return cfg, out


def test_every_file_is_there_and_nothing_else(exported):
    cfg, out = exported
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "merged",
            "Modelfile",
            "vllm-lora.json",
            "verify.json",
            "manifest.json",
            "quickstart.f16.gguf",
            "quickstart.q8_0.gguf",
            "quickstart.q4_k_m.gguf",
            "quickstart.lora.gguf",
            "quickstart.base.f16.gguf",
        ]
    )  # no temporary leftovers
    manifest = read_manifest(out)
    assert manifest["status"] == "complete" and manifest["stage"] == "export"
    assert {"merge_s", "gguf_f16_s", "gguf_q4_k_m_s", "verify_s", "total_s"} <= set(manifest["timings"])
    assert (out / "merged" / "model.safetensors").exists() and (out / "merged" / "tokenizer.json").exists()


def test_verify_json_reports_agreement_per_quant(exported):
    _, out = exported
    report = json.loads((out / "verify.json").read_text())
    assert report["ok"] and set(report["results"]) == {"f16", "q8_0", "q4_k_m"}
    for quant, r in report["results"].items():
        assert r["loads"] and r["tokenization_identical"], quant
        assert {"max_abs_diff", "top1_agreement", "greedy_common_prefix", "tolerance"} <= set(r)
    assert report["results"]["f16"]["greedy_identical"] == len(
        report["results"]["f16"]["greedy_common_prefix"]
    )
    assert report["lora_gguf"]["written"] and report["lora_gguf"]["lora_ok"]


def test_ggufs_stop_on_im_end(exported):
    _, out = exported
    md = read_gguf_metadata(out / "quickstart.q4_k_m.gguf")
    tok = json.loads((out / "merged" / "generation_config.json").read_text())
    assert md["tokenizer.ggml.eos_token_id"] == tok["eos_token_id"][0]  # <|im_end|>
    assert md["tokenizer.ggml.eot_token_id"] == tok["eos_token_id"][0]


def test_modelfile_points_to_q4_k_m_and_carries_the_training_system_prompt(exported):
    cfg, out = exported
    parsed = parse_modelfile((out / "Modelfile").read_text())
    assert parsed["from"] == "./quickstart.q4_k_m.gguf" and parsed["system"] == SYSTEM_PROMPT
    assert ("num_ctx", str(cfg.export.ollama.num_ctx)) in parsed["parameters"]
    conversation = [{"role": "user", "content": "Write a BBj loop"}]
    rendered = render_go_template(parsed["template"], ollama_values(conversation, parsed["system"]))
    assert rendered == render_chatml(
        [{"role": "system", "content": SYSTEM_PROMPT}, *conversation], add_generation_prompt=True
    )


def test_vllm_config_serves_the_adapter_as_lora(exported):
    _, out = exported
    data = json.loads((out / "vllm-lora.json").read_text())
    assert data["mode"] == "lora" and data["lora"]["rank"] == 8 and data["args"]["max_lora_rank"] == 8
    assert "--enable-lora" in data["command"] and "merged" in data["merged_command"]


def test_serve_commands_on_the_export(exported, tmp_path):
    _, out = exported
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        f"name: quickstart\noutput_dir: {out.parent.parent}/{{name}}\n"
        "model: {source: tiny:test}\ndata: {chatml: [examples/chatml/*.jsonl]}\n"
    )
    res = run_cli("serve", "ollama", str(cfg_file), env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert (
        "ollama create bbj-quickstart -f Modelfile" in res.stdout and "quickstart.q4_k_m.gguf" in res.stdout
    )
    res = run_cli("serve", "vllm", str(cfg_file))
    assert res.returncode == 0, res.stderr
    assert "--enable-lora" in res.stdout and "--max-lora-rank 8" in res.stdout


def test_serve_ollama_runs_ollama_create_when_ollama_is_installed(exported, tmp_path):
    """Ollama cannot run here: a stand-in `ollama` on PATH records how bbjtune calls it."""
    _, out = exported
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "called.txt"
    fake = bin_dir / "ollama"
    fake.write_text(f'#!/bin/sh\necho "$PWD|$*" > {record}\nexit ${{OLLAMA_EXIT:-0}}\n')
    fake.chmod(0o755)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        f"name: quickstart\noutput_dir: {out.parent.parent}/{{name}}\n"
        "model: {source: tiny:test}\ndata: {chatml: [examples/chatml/*.jsonl]}\n"
    )
    res = run_cli("serve", "ollama", str(cfg_file), env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert record.read_text().strip() == f"{out}|create bbj-quickstart -f Modelfile"
    res = run_cli(
        "serve", "ollama", str(cfg_file), env={"PATH": f"{bin_dir}:/usr/bin:/bin", "OLLAMA_EXIT": "1"}
    )
    assert res.returncode == 2 and "ollama create" in res.stderr and "Traceback" not in res.stderr


def test_a_missing_base_model_stops_before_anything_is_written(tiny_model_dir, tmp_path):
    from bbjtune.export.stage import run_stage

    cfg = _config(tmp_path)
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    make_trained_run(cfg.train_dir, str(tmp_path / "gone"), adapter, tiny_model_dir)
    with pytest.raises(BbjtuneError, match="does not exist"):
        run_stage(cfg)
    assert not cfg.export_dir.exists()


def test_missing_training_fails_in_one_line(tmp_path):
    from bbjtune.export.stage import run_stage

    with pytest.raises(BbjtuneError, match="trained.json"):
        run_stage(_config(tmp_path))
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        f"name: nothing\noutput_dir: {tmp_path}/{{name}}\nmodel: {{source: tiny:test}}\n"
        "data: {chatml: [examples/chatml/*.jsonl]}\n"
    )
    res = run_cli("export", str(cfg_file))
    assert res.returncode == 2 and "Traceback" not in res.stderr and "bbjtune train" in res.stderr
    assert not (tmp_path / "nothing" / "export").exists()


def test_unknown_quant_type_is_a_config_error(tmp_path):
    with pytest.raises(BbjtuneError, match="export.gguf"):
        _config(tmp_path, "export.gguf=[f16, q4_k_xl]")


def test_not_enough_disk_space_is_refused_before_writing(tmp_path, tiny_model_dir):
    from bbjtune.models.architecture import Architecture
    from bbjtune.sizing import check_export, estimate_export

    def check_disk_space(out, n_params, quants, lora):
        """The export's disk check for a model of `n_params` parameters (the shape matters not here)."""
        arch = Architecture(
            hidden=1, intermediate=1, layers=0, heads=1, kv_heads=1, vocab=n_params - 1, tied=True
        )
        est = estimate_export(arch, quants, streaming=False, lora_gguf=lora, verify=False)
        check_export(out, est, ram=2**62)

    from bbjtune.models.loading import architecture_of
    from bbjtune.models import load_model

    with pytest.raises(BbjtuneError, match="not enough disk space"):
        check_disk_space(tmp_path / "export", 10**15, ["f16", "q4_k_m"], lora=False)
    check_disk_space(tmp_path / "export", 1000, ["f16"], lora=False)
    assert not (tmp_path / "export").exists()
    model = load_model(str(tiny_model_dir), dtype="float32")
    assert architecture_of(str(tiny_model_dir)).params == sum(p.numel() for p in model.parameters())


def test_the_modelfile_keeps_its_quant_when_it_passed_verification(exported):
    from bbjtune.export.stage import ollama_quant

    _, out = exported
    report = json.loads((out / "verify.json").read_text())
    sizes = {q: (out / f"quickstart.{q}.gguf").stat().st_size for q in report["results"]}
    assert ollama_quant("q4_k_m", report, sizes) == "q4_k_m"


def test_a_q4_k_m_that_fails_verification_leaves_ollama_and_serve_on_q8_0(
    tiny_model_dir, tmp_path, monkeypatch
):
    # A real failure: the q4_k_m file is verified against a tolerance no 4-bit file can meet.
    from bbjtune.export import verify
    from bbjtune.export.stage import run_stage
    from bbjtune.serve.cli import modelfile_quant

    monkeypatch.setitem(
        verify.TOLERANCES, "q4_k_m", verify.Tolerance(**{**vars(verify.TOLERANCES["q4_k_m"]), "top1": 1.01})
    )
    cfg = _config(tmp_path, "export.gguf=[q8_0,q4_k_m]")
    adapter = make_adapter(tiny_model_dir, cfg.train_dir / "sft" / "adapter", seed=7)
    make_trained_run(cfg.train_dir, str(tiny_model_dir), adapter, tiny_model_dir, stages=("sft",))
    with pytest.raises(BbjtuneError, match="q4_k_m") as err:
        run_stage(cfg)
    assert "q8_0 passed" in err.value.hint
    out = cfg.export_dir
    assert parse_modelfile((out / "Modelfile").read_text())["from"] == "./quickstart.q8_0.gguf"
    assert (out / "quickstart.q4_k_m.gguf").exists()  # kept for inspection
    assert modelfile_quant(cfg) == "q8_0"  # `serve gguf` serves the same file


def test_the_modelfile_falls_back_to_the_smallest_file_that_passed(exported):
    # as measured on a fine-tuned 0.5B model: q4_k_m fails (top-1 0.75), q8_0 and f16 pass
    from bbjtune.export.stage import ollama_quant

    _, out = exported
    report = json.loads((out / "verify.json").read_text())
    sizes = {q: (out / f"quickstart.{q}.gguf").stat().st_size for q in report["results"]}
    report["results"]["q4_k_m"]["ok"] = False
    assert ollama_quant("q4_k_m", report, sizes) == "q8_0"
    for r in report["results"].values():
        r["ok"] = False
    assert ollama_quant("q4_k_m", report, sizes) == "q4_k_m"  # nothing passed: keep the configured file
    assert ollama_quant("q4_k_m", None, sizes) == "q4_k_m"  # verification off
