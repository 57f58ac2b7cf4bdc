"""`bbjtune export`: from a trained run to files Ollama, llama.cpp and vLLM can serve, each verified.

    runs/<name>/export/
      merged/                 the adapter folded into the 16-bit base (safetensors, tokenizer, stop ids)
      <name>.f16.gguf         written with the gguf package
      <name>.q8_0.gguf        written with the gguf package
      <name>.q4_k_m.gguf      quantized by llama.cpp from the f16 file (from q8_0 where the disk is short:
                              export.kquant_source)
      Modelfile               Ollama: FROM the q4_k_m file (the smallest verified one if it fails), ChatML
                              TEMPLATE, stop tokens, SYSTEM
      vllm-lora.json          vLLM: launch command with the adapter as LoRA (or the merged model, and why)
      verify.json             per GGUF: tokenization identical, max/mean |Δlogit|, top-1 and greedy agreement
      manifest.json

Everything that can be checked is checked before the first large file is written: trained.json,
the adapter against its base, quant types, llama-cpp-python, free disk space and available RAM
against an estimate from the parameter count (preflight.py). Every file appears under its final
name only when complete.

Without `export.merged` the adapters are merged tensor by tensor straight into the GGUF writer
(stream.py): no whole model in RAM, no merged checkpoint on disk. With it, or for an adapter the
streaming merge cannot reproduce (DoRA, ...), PEFT merges the whole model; the manifest's
`merge_path` says which ran and why. The f16 file llama.cpp quantizes from, when f16 itself was not
asked for, is temporary: deleted once the k-quants are written (after verification when it is
verification's reference).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bbjtune.artifacts import StageRun, atomic_write_json
from bbjtune.config import RunConfig
from bbjtune.progress import new_progress
from bbjtune.export.gguf import WRITER_TYPES, write_gguf
from bbjtune.export.lora_gguf import why_not, write_lora_gguf
from bbjtune.export.merge import MergePlan, check_plan, merge, plan_from_trained
from bbjtune.export.modelfile import ollama_model_name, write_modelfile
from bbjtune.export.quantize import quantize, require_llama_cpp
from bbjtune.export.verify import compare_lora_with_merged, raise_on_failure, verify_all
from bbjtune.export.vllm import explain, plan_vllm, servable_base
from bbjtune.sizing import (
    BASELINE_RAM,
    REFERENCE_TYPES,
    available_ram,
    check_export,
    ExportSizing,
    configured_kquant_source,
    free_disk,
)
from bbjtune.export.stream import StreamedMerge, stream_blockers, write_model_files
from bbjtune.models.loading import architecture_of, resolve_source, torch_dtype
from bbjtune.models.merge import _declared_dtype
from bbjtune.models.loading import load_model
from bbjtune.models.merge import apply_adapter

console = Console(stderr=True)


def run_stage(cfg: RunConfig) -> Path:
    export = cfg.export
    out = cfg.export_dir
    plan = plan_from_trained(cfg.train_dir)
    adapters = check_plan(plan)
    llama_types = [q for q in export.gguf if q not in WRITER_TYPES]
    if llama_types or export.verify or export.lora_gguf:
        require_llama_cpp()
    arch = architecture_of(plan.base)
    ram = available_ram()
    free = free_disk(out)

    sizing = (
        ExportSizing(
            arch,
            list(export.gguf),
            export.kquant_source,
            export.lora_gguf,
            export.verify,
            merge_bytes=torch_dtype(cfg.model.dtype).itemsize,
            free=free,
            ram=ram,
            save_bytes=_save_bytes(plan.base, cfg.model.dtype),
        )
        if arch is not None
        else None  # without an architecture, no estimate to choose by
    )
    keep_merged, short = sizing.merged(export.merged) if sizing else (export.merged is not False, None)
    if short:
        console.print(
            f"[yellow]note:[/] no merged/ safetensors (export.merged: auto): {short}. The GGUF files are "
            "made by merging tensor by tensor; set export.merged: true and free space to have merged/ too",
            highlight=False,
        )
    streaming, why = choose_merge_path(keep_merged, plan.base, adapters)
    if short:  # the manifest's merge_path says why there is no merged/
        why = f"export.merged: auto, and {short}; {why}"
    est = None
    source = configured_kquant_source(export.kquant_source)
    if sizing is not None:
        source, est = sizing.routed(keep_merged, streaming)
        if export.kquant_source == "auto" and source == "q8_0":
            console.print(
                f"[yellow]note:[/] {', '.join(llama_types)} will be quantized from a q8_0 file, not f16: "
                f"{free / 2**30:.1f} GiB free cannot hold the f16 file beside the others "
                f"(set export.kquant_source: f16 and free space to have it)",
                highlight=False,
            )
        warnings = check_export(out, est, free=free, ram=ram)
        console.print(
            f"export needs about {est.disk_peak / 2**30:.1f} GiB of disk at the peak and "
            f"{max(v for k, v in est.ram.items() if k != 'verify') / 2**30:.1f} GiB of RAM "
            f"({est.ram.get('verify', 0) / 2**30:.1f} GiB to verify against the "
            f"{'merged model' if est.verify_reference == 'hf' else '16-bit GGUF'})"
            if export.verify
            else f"export needs about {est.disk_peak / 2**30:.1f} GiB of disk at the peak and "
            f"{est.ram_peak / 2**30:.1f} GiB of RAM",
            highlight=False,
        )
        for warning in warnings:
            console.print(f"[yellow]![/] {warning}")
    reference_why = _gguf_reference_reason(est, ram) if export.verify else None

    with StageRun(out, stage="export", config=cfg.model_dump(mode="json")) as run:
        # hash the small inputs (adapters, trained.json, the base's config), not a multi-GB base model
        base_config = Path(plan.base) / "config.json"
        run.add_inputs(
            [cfg.train_dir / "trained.json", *plan.adapters, *([base_config] if base_config.exists() else [])]
        )
        run.extra["base_model"] = plan.base
        run.extra["merge_path"] = {"path": "stream" if streaming else "hf", "reason": why}
        if llama_types:
            run.extra["kquant_source"] = source
        if est is not None:
            run.extra["estimate"] = est.to_json()
        console.print(f"merge: {'streaming, tensor by tensor' if streaming else 'HF (whole model)'} — {why}")
        merged = out / "merged"
        with tempfile.TemporaryDirectory(prefix=".export.", dir=out) as scratch_name:
            scratch = Path(scratch_name)
            need_reference = reference_why is not None and not any(q in export.gguf for q in REFERENCE_TYPES)
            if streaming:
                model_dir = write_model_files(plan.base, plan.tokenizer_source, plan.chat, scratch / "model")
                with StreamedMerge(plan.base, adapters, dtype=cfg.model.dtype) as tensors:
                    ggufs, temporary = _write_ggufs(
                        cfg, model_dir, run, scratch, tensors, need_reference, source
                    )
            else:
                model_dir = merged if keep_merged else scratch / "merged"
                with run.timed("merge"), console.status(f"merging the adapter into {plan.base}"):
                    _merge(plan, model_dir, cfg.model.dtype)
                console.print(f"[green]✓[/] merged model → {model_dir if keep_merged else '(temporary)'}")
                ggufs, temporary = _write_ggufs(cfg, model_dir, run, scratch, None, need_reference, source)
            if not reference_why:  # the f16 intermediate is nobody's reference: gone before verification
                for path in temporary.values():
                    path.unlink(missing_ok=True)
            report = None
            if export.verify:
                reference = _reference_file(ggufs, temporary) if reference_why else None
                hf_model = None
                if reference is None and streaming:
                    hf_model = _merged_in_memory(plan)
                report = _verify(cfg, model_dir, ggufs, run, hf_model, reference, reference_why)
                if hf_model is not None:  # model_dir is scratch: name what the reference really was
                    report["reference"] = (
                        f"{plan.base} with {len(plan.adapters)} adapter(s), merged in memory"
                    )
                del hf_model
            for path in temporary.values():  # the f16 reference: every k-quant is written and verified
                path.unlink(missing_ok=True)
            lora = _lora_gguf(cfg, plan, adapters, model_dir, run, scratch)
            if report is not None:
                report["lora_gguf"] = lora
                atomic_write_json(out / "verify.json", report)
                run.outputs.append("verify.json")
        if keep_merged:
            run.outputs.append("merged/")
        if export.ollama.enabled:
            _write_modelfile(cfg, plan, run, report)
        if export.vllm.enabled:
            _write_vllm(cfg, plan, adapters, run, keep_merged)
        run.outputs.extend(p.name for p in ggufs.values())
        if report is not None:
            raise_on_failure(report)
    return out


# ----------------------------------------------------------------------------- steps


def choose_merge_path(keep_merged: bool, base: str, adapters) -> tuple[bool, str]:
    """(stream?, why): stream unless merged safetensors are asked for or the adapter needs the HF merge."""
    if keep_merged:
        return False, "merged/ is written (export.merged), so the HF merge runs"
    blockers = stream_blockers(base, adapters)
    if blockers:
        return False, "the streaming merge cannot reproduce it: " + "; ".join(blockers)
    return True, "peak RAM about the largest tensor, no merged checkpoint on disk"


def _save_bytes(base: str, dtype: str) -> int:
    declared = _declared_dtype(base)
    return (declared or torch_dtype(dtype)).itemsize


def _gguf_reference_reason(est, ram: int) -> str | None:
    """Why verification compares against a 16-bit GGUF instead of the HF model (None: the HF model fits)."""
    if est is None or est.verify_reference == "hf":
        return None
    need = BASELINE_RAM + int(est.params * 4 * 1.05)
    return (
        f"the merged model in float32 needs about {need / 2**30:.1f} GiB of RAM, {ram / 2**30:.1f} GiB "
        "available: the quantized files are compared with the 16-bit GGUF instead"
    )


def _reference_file(ggufs: dict[str, Path], temporary: dict[str, Path]) -> tuple[str, Path]:
    files = {**temporary, **ggufs}
    quant = next(q for q in REFERENCE_TYPES if q in files)
    return quant, files[quant]


def _merged_in_memory(plan):
    """The HF merge without saving it: the reference verification compares the GGUF files with."""

    with console.status("merging in memory for verification (HF, float32)"):
        model = load_model(plan.base, dtype="float32")
        for adapter in plan.adapters:
            model = apply_adapter(model, adapter)
    return model


def _merge(plan, merged_dir: Path, dtype: str) -> None:
    merge(plan, merged_dir, dtype=dtype)


def _write_ggufs(
    cfg: RunConfig,
    model_dir: Path,
    run: StageRun,
    scratch: Path,
    tensors,
    need_reference: bool,
    source: str = "f16",
) -> tuple[dict[str, Path], dict[str, Path]]:
    """f16/bf16/q8_0 with the gguf package, then the llama.cpp types from the `source` file (f16 or q8_0).

    Returns ({type: file} as asked, {type: temporary file}): the file llama.cpp quantizes from (or the
    f16 verification compares with) lives in scratch when it was not asked for; the caller deletes it.
    """

    wanted = list(cfg.export.gguf)
    llama_types = [q for q in wanted if q not in WRITER_TYPES]
    direct = [q for q in wanted if q in WRITER_TYPES]
    if llama_types and source not in direct:
        direct.insert(0, source)
    if need_reference and "f16" not in direct:
        direct.insert(0, "f16")
    paths: dict[str, Path] = {}
    with new_progress(console) as progress:
        for quant in direct:
            target = cfg.gguf_file(quant) if quant in wanted else scratch / f"{cfg.name}.{quant}.gguf"
            task = progress.add_task(f"writing {target.name}", total=None)
            t0 = time.time()
            write_gguf(
                model_dir,
                target,
                quant,
                name=cfg.name,
                on_tensor=lambda i, n, task=task: progress.update(task, completed=i, total=n),
                tensors=tensors,
            )
            _record(run, quant, target, t0)
            paths[quant] = target
        for quant in llama_types:
            target = cfg.gguf_file(quant)
            task = progress.add_task(f"quantizing {target.name} (llama.cpp)", total=None)
            t0 = time.time()
            quantize(paths[source], target, quant, threads=cfg.export.threads, requantize=source != "f16")
            progress.update(task, completed=1, total=1)
            _record(run, quant, target, t0)
            paths[quant] = target
    return {q: paths[q] for q in wanted}, {q: p for q, p in paths.items() if q not in wanted}


def _record(run: StageRun, quant: str, path: Path, t0: float) -> None:
    seconds = round(time.time() - t0, 2)
    run.timings[f"gguf_{quant}_s"] = seconds
    run.metrics.setdefault("gguf_bytes", {})[quant] = path.stat().st_size
    console.print(f"[green]✓[/] {path.name} ({path.stat().st_size / 2**20:.1f} MiB, {seconds:.1f} s)")


def _verify(
    cfg: RunConfig, model_dir: Path, ggufs: dict[str, Path], run: StageRun, model, reference, why
) -> dict[str, Any]:
    if reference is not None:
        console.print(f"[yellow]![/] verification reference: {reference[1].name}, because {why}")
    with run.timed("verify"), console.status("verifying the GGUF files with llama.cpp"):
        report = verify_all(
            model_dir, ggufs, threads=cfg.export.threads, model=model, reference_gguf=reference, why=why
        )
    for quant, r in report["results"].items():
        mark = "[green]✓[/]" if r["ok"] else "[red]✗[/]"
        if not r.get("loads"):
            console.print(f"{mark} {quant}: llama.cpp cannot load it: {r.get('error')}")
            continue
        if r.get("reference"):
            console.print(
                f"{mark} {quant}: the reference; tokens "
                f"{'identical' if r['tokenization_identical'] else 'DIFFER'} (its logits are not checked "
                "against the HF model: no RAM for it)"
            )
            continue
        console.print(
            f"{mark} {quant}: tokens {'identical' if r['tokenization_identical'] else 'DIFFER'}, "
            f"max |Δlogit| {r['max_abs_diff']:.4g} ({r['max_rel_diff']:.3f}×std), "
            f"top-1 {r['top1_agreement']:.1%}, greedy identical on "
            f"{r['greedy_identical']}/{len(r['greedy_common_prefix'])} prompts"
        )
    run.metrics["verify"] = {
        q: {
            k: r.get(k)
            for k in (
                "ok",
                "max_abs_diff",
                "max_rel_diff",
                "top1_agreement",
                "tokenization_identical",
                "greedy_identical",
            )
        }
        for q, r in report["results"].items()
    }
    return report


def _lora_gguf(
    cfg: RunConfig, plan, adapters, merged: Path, run: StageRun, scratch: Path
) -> dict[str, Any] | None:
    """The adapter as a GGUF LoRA (with its base as f16 GGUF), checked against the merged f16 GGUF."""

    if not cfg.export.lora_gguf:
        possible = len(adapters) == 1 and not why_not(adapters[0])
        run.extra["lora_gguf"] = {
            "written": False,
            "reasons": ["export.lora_gguf is false" + (" (this adapter could be one)" if possible else "")],
        }
        return None

    if len(adapters) != 1:
        reason = "there is no adapter" if not adapters else "more than one adapter is chained"
        console.print(f"[yellow]![/] no GGUF LoRA adapter: {reason}")
        run.extra["lora_gguf"] = {"written": False, "reasons": [reason]}
        return run.extra["lora_gguf"]
    reasons = why_not(adapters[0])
    if reasons:
        console.print(
            "[yellow]![/] no GGUF LoRA adapter, because "
            + "; ".join(reasons)
            + ". The merged GGUF files carry the same model."
        )
        run.extra["lora_gguf"] = {"written": False, "reasons": reasons}
        return run.extra["lora_gguf"]

    with run.timed("lora_gguf"), console.status("writing the GGUF LoRA adapter and its base"):
        lora_path = write_lora_gguf(
            adapters[0].directory, cfg.export_dir / f"{cfg.name}.lora.gguf", name=cfg.name
        )
        base_dir = _base_checkpoint_dir(plan, scratch)
        base_path = write_gguf(
            base_dir, cfg.export_dir / f"{cfg.name}.base.f16.gguf", "f16", name=f"{cfg.name}-base"
        )
    result: dict[str, Any] = {"written": True, "adapter": lora_path.name, "base": base_path.name}
    if cfg.export.verify:
        merged_f16 = cfg.gguf_file("f16")
        if merged_f16.exists():
            result.update(
                compare_lora_with_merged(base_path, lora_path, merged_f16, threads=cfg.export.threads)
            )
    run.outputs += [lora_path.name, base_path.name]
    run.extra["lora_gguf"] = result
    console.print(f"[green]✓[/] {lora_path.name} (+ {base_path.name})")
    return result


def _base_checkpoint_dir(plan, scratch: Path) -> Path:
    """The base as a safetensors directory (GGUF and hub bases are saved to scratch first)."""

    source = resolve_source(plan.base)
    if source.kind in ("local", "tiny"):
        return source.path
    return merge(
        MergePlan(base=plan.base, adapters=[], tokenizer=plan.tokenizer, chat=plan.chat), scratch / "base"
    )


def ollama_quant(wanted: str, report: dict[str, Any] | None, sizes: dict[str, int]) -> str:
    """The GGUF the Modelfile uses: the configured one, unless verification failed it.

    Then the smallest file that passed (a 0.5B model can lose a quarter of its top-1 agreement at
    q4_k_m while q8_0 stays faithful); if none passed, the configured one all the same.
    """
    results = (report or {}).get("results") or {}
    if wanted not in results or results[wanted].get("ok"):
        return wanted
    passed = [q for q, r in results.items() if r.get("ok") and q in sizes]
    return min(passed, key=lambda q: sizes[q]) if passed else wanted


def _write_modelfile(cfg: RunConfig, plan, run: StageRun, report: dict[str, Any] | None = None) -> None:
    o = cfg.export.ollama
    name = ollama_model_name(cfg.name, o.model_name)
    system = o.system_prompt or plan.system_prompt
    sizes = {q: f.stat().st_size for q in cfg.export.gguf if (f := cfg.gguf_file(q)).exists()}
    quant = ollama_quant(o.quant, report, sizes)
    if quant != o.quant:
        console.print(
            f"[yellow]the Modelfile uses {quant}, not {o.quant}:[/] the {o.quant} file failed "
            f"verification (verify.json); {quant} passed",
            highlight=False,
        )
    path = write_modelfile(
        cfg.export_dir,
        cfg.gguf_file(quant).name,
        system_prompt=system,
        num_ctx=o.num_ctx,
        temperature=o.temperature,
        model_name=name,
        repeat_penalty=cfg.served_repetition[0],
        repeat_last_n=cfg.served_repetition[1],
    )
    run.outputs.append(path.name)
    run.extra["ollama"] = {
        "model_name": name,
        "modelfile": str(path),
        "system_prompt": system,
        "quant": quant,
        **({"configured_quant": o.quant} if quant != o.quant else {}),
    }
    console.print(f"[green]✓[/] Modelfile ({quant}) → ollama create {name} -f {path}")


def _write_vllm(cfg: RunConfig, plan, adapters, run: StageRun, keep_merged: bool) -> None:
    v = cfg.export.vllm
    vplan = plan_vllm(
        adapters[-1] if adapters else None,
        servable_base(plan.base),
        served_name=v.served_name or f"bbj-{cfg.name}",
        max_loras=v.max_loras,
        max_model_len=v.max_model_len,
        merged_dir=cfg.export_dir / "merged" if keep_merged else None,
        chained=len(adapters),
    )
    atomic_write_json(cfg.export_dir / "vllm-lora.json", vplan.to_json())
    run.outputs.append("vllm-lora.json")
    run.extra["vllm"] = {"mode": "lora" if vplan.lora_ok else "merged", "blockers": vplan.blockers}
    console.print("[green]✓[/] vllm-lora.json — " + explain(vplan).replace("\n", "\n  "))
