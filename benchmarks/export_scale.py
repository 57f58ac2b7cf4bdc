"""Export at scale on a CPU: a random Qwen2.5-Coder 7B/14B/32B with a LoRA adapter of the presets' rank.

Builds `random:qwen2.5-coder-<size>-instruct` (real architecture, random bf16 weights), writes a
LoRA adapter of the presets' rank (r=32, alpha=64, all linear layers; random A and small random B,
so the merge changes every adapted weight) and a trained.json with the train stage's own writer,
then runs `bbjtune export`'s stage in this process while a thread samples, every 0.5 s, the
process's resident memory (VmRSS, and RssAnon: the part that needs RAM, not file pages the kernel
can drop) and the bytes under the export directory (temporary files included). Each step (streamed
GGUF writes, llama.cpp quantization, verification) is timed and gets its own peaks.

    nice -n 5 python benchmarks/export_scale.py --size 7b --gguf q8_0 q4_k_m --work /big/disk/scale \\
        --json benchmarks/results/scale-2026-12-06.json

Writes rows {model, stage, step, ok, wall_s, peak_gpu_gib, peak_ram_gib, peak_anon_gib, peak_disk_gib,
machine, command, ...} (one per step and one for the whole export) and the export's estimate.
Needs the Qwen2.5 tokenizer (BBJTUNE_TOKENIZER_SOURCE or benchmarks/fetch_qwen05b.py) and, for 7B,
~15 GB for the random base plus the export's peak (printed before it starts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path

GiB = 2**30


def proc_status() -> tuple[int, int]:
    """(VmRSS, RssAnon) of this process in bytes."""
    rss = anon = 0
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
    return rss, anon


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass  # a temporary file renamed or deleted between listing and stat
    return total


class Sampler(threading.Thread):
    """Peak RSS, anonymous RSS and disk per labelled step."""

    def __init__(self, out_dir: Path, every: float = 0.5):
        super().__init__(daemon=True)
        self.out_dir, self.every = out_dir, every
        self.step = "setup"
        self.peaks: dict[str, dict[str, float]] = {}
        self.stop = threading.Event()

    def mark(self, step: str) -> None:
        self.step = step
        self.sample()

    def sample(self) -> None:
        rss, anon = proc_status()
        disk = tree_bytes(self.out_dir) if self.out_dir.exists() else 0
        for key in (self.step, "total"):
            p = self.peaks.setdefault(key, {"rss": 0, "anon": 0, "disk": 0})
            p["rss"], p["anon"], p["disk"] = max(p["rss"], rss), max(p["anon"], anon), max(p["disk"], disk)

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.sample()


def write_random_adapter(base_dir: Path, out: Path, r: int, alpha: int, seed: int = 0) -> Path:
    """A PEFT LoRA adapter for every linear layer of `base_dir`, written without loading the model."""
    import torch
    from safetensors.torch import save_file

    from bbjtune.models.architecture import Architecture

    arch = Architecture.from_config(json.loads((base_dir / "config.json").read_text()))
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(arch.layers):
        for module, (fan_in, fan_out) in arch.linear_shapes().items():
            group = "self_attn" if module.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            key = f"base_model.model.model.layers.{layer}.{group}.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(r, fan_in, generator=gen) / fan_in**0.5
            tensors[f"{key}.lora_B.weight"] = torch.randn(fan_out, r, generator=gen) * 1e-3
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "base_model_name_or_path": str(base_dir),
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": sorted(arch.linear_shapes()),
        "bias": "none",
        "use_dora": False,
        "use_rslora": False,
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "task_type": "CAUSAL_LM",
        "inference_mode": True,
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out


def instrument(sampler: Sampler, timings: dict[str, float]) -> None:
    """Label the export's steps for the sampler by wrapping the functions the stage calls."""
    from bbjtune.export import stage

    def wrap(name: str, label) -> None:
        original = getattr(stage, name)

        def wrapped(*args, **kwargs):
            step = label(*args, **kwargs)
            sampler.mark(step)
            t0 = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                timings[step] = round(timings.get(step, 0) + time.time() - t0, 1)
                sampler.mark("between steps")

        setattr(stage, name, wrapped)

    wrap("write_model_files", lambda *a, **k: "tokenizer+config")
    wrap("write_gguf", lambda model_dir, target, quant, **k: f"write {quant} (streamed merge)")
    wrap("quantize", lambda src, target, quant, **k: f"quantize {quant} (llama.cpp)")
    wrap("verify_all", lambda *a, **k: "verify")
    wrap("_merged_in_memory", lambda *a, **k: "merge in memory for verification")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="7b", choices=["0.5b", "1.5b", "3b", "7b", "14b", "32b"])
    parser.add_argument("--gguf", nargs="+", default=["q8_0", "q4_k_m"])
    parser.add_argument(
        "--work", type=Path, required=True, help="directory for the random base and the export"
    )
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--alpha", type=int, default=64)
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the exported files and the random base")
    parser.add_argument(
        "--hf-merge-only",
        action="store_true",
        help="measure the HF merge (whole model, model.dtype bfloat16) alone, for comparison; its row is "
        "appended to --json",
    )
    args = parser.parse_args()

    os.environ.setdefault("BBJTUNE_CACHE_DIR", str(args.work / "cache"))
    from bbjtune.config import load_config
    from bbjtune.sizing import available_ram, free_disk
    from bbjtune.models.loading import resolve_source
    from bbjtune.models.trained import write_trained

    t0 = time.time()
    base = resolve_source(f"random:qwen2.5-coder-{args.size}-instruct").path
    build_s = time.time() - t0
    run_root = args.work / "runs"
    overrides = [
        f"output_dir={run_root}/{{name}}",
        f"export.gguf=[{', '.join(args.gguf)}]",
        "export.merged=false",
        f"export.verify={'false' if args.no_verify else 'true'}",
        "model.dtype=bfloat16",
    ]
    cfg = load_config("quickstart", overrides)
    adapter = write_random_adapter(base, cfg.train_dir / "sft" / "adapter", args.rank, args.alpha)
    lora = {
        "r": args.rank,
        "lora_alpha": args.alpha,
        "lora_dropout": 0.0,
        "use_dora": False,
        "use_rslora": False,
        "target_modules": "all-linear",
    }
    write_trained(
        cfg.train_dir,
        base_model=str(base),
        original_model=f"random:qwen2.5-coder-{args.size}-instruct",
        adapter=adapter,
        tokenizer=base,
        stages=["sft"],
        lora=lora,
        max_length=4096,
        system_prompt=None,
    )
    if args.hf_merge_only:
        hf_merge_row(cfg, args, base)
        return
    out = cfg.export_dir
    if out.exists():
        shutil.rmtree(out)
    before = {
        "ram_available_gib": round(available_ram() / GiB, 1),
        "disk_free_gib": round(free_disk(out) / GiB, 1),
    }

    sampler = Sampler(out)
    timings: dict[str, float] = {}
    instrument(sampler, timings)
    sampler.start()
    from bbjtune.errors import BbjtuneError
    from bbjtune.export.stage import run_stage

    t1 = time.time()
    error = None
    try:
        run_stage(cfg)
    except BbjtuneError as exc:
        error = str(exc)
    wall = time.time() - t1
    sampler.stop.set()
    sampler.sample()
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else {}
    verify = json.loads((out / "verify.json").read_text()) if (out / "verify.json").exists() else None

    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {_mem_total_gib():.0f} GiB RAM, no GPU"
    command = "nice -n 5 python " + " ".join(sys.argv).replace(str(args.work), "WORK")
    common = {
        "model": args.size,
        "stage": "export",
        "peak_gpu_gib": None,
        "machine": machine,
        "command": command,
    }

    def row(step: str, ok: bool, wall_s: float) -> dict:
        p = sampler.peaks.get(step, {"rss": 0, "anon": 0, "disk": 0})
        return {
            **common,
            "step": step,
            "ok": ok,
            "wall_s": round(wall_s, 1),
            "peak_ram_gib": round(p["rss"] / GiB, 2),
            "peak_anon_gib": round(p["anon"] / GiB, 2),
            "peak_disk_gib": round(p["disk"] / GiB, 2),
        }

    # a step is ok when it ran to the end; verification's verdict is reported apart (`verdict_ok`):
    # random weights give near-uniform logits, whose top-1 choice any rounding can flip
    files_ok = error is None or error.startswith("GGUF verification failed")
    rows = [row(step, files_ok, s) for step, s in timings.items()]
    rows.append(row("total", files_ok, wall))
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "what": f"bbjtune export of random:qwen2.5-coder-{args.size}-instruct + a random LoRA r={args.rank} "
        f"(all linear layers), export.gguf={args.gguf}, export.merged=false (streamed merge), on CPU",
        "rows": rows,
        "error": error,
        "verdict_ok": None if verify is None else verify.get("ok"),
        "random_base_build_s": round(build_s, 1),
        "base_bytes": tree_bytes(Path(base)),
        "before": before,
        "load_average_after": os.getloadavg(),
        "estimate": (manifest.get("extra") or manifest).get("estimate") or manifest.get("estimate"),
        "merge_path": (manifest.get("extra") or manifest).get("merge_path") or manifest.get("merge_path"),
        "manifest_timings": manifest.get("timings"),
        "gguf_bytes": (manifest.get("metrics") or {}).get("gguf_bytes"),
        "verify": _verify_summary(verify),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(run_root, ignore_errors=True)


def hf_merge_row(cfg, args, base: Path) -> None:
    """The HF merge (PEFT, whole model) into merged safetensors, timed and sampled like the export."""
    from bbjtune.export.merge import merge, plan_from_trained

    out = args.work / "hf-merged"
    shutil.rmtree(out, ignore_errors=True)
    sampler = Sampler(out)
    sampler.start()
    sampler.mark("hf merge")
    t0 = time.time()
    error = None
    try:
        merge(plan_from_trained(cfg.train_dir), out, dtype=cfg.model.dtype)
    except Exception as exc:  # noqa: BLE001 — a benchmark records the failure (e.g. out of memory) as a row
        error = f"{type(exc).__name__}: {exc}"
    wall = time.time() - t0
    sampler.stop.set()
    sampler.sample()
    p = sampler.peaks["hf merge"]
    row = {
        "model": args.size,
        "stage": "export",
        "step": f"HF merge alone (PEFT, whole model in {cfg.model.dtype}, merged safetensors written)",
        "ok": error is None,
        "wall_s": round(wall, 1),
        "peak_gpu_gib": None,
        "peak_ram_gib": round(p["rss"] / GiB, 2),
        "peak_anon_gib": round(p["anon"] / GiB, 2),
        "peak_disk_gib": round(p["disk"] / GiB, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {_mem_total_gib():.0f} GiB RAM, no GPU",
        "command": "nice -n 5 python " + " ".join(sys.argv).replace(str(args.work), "WORK"),
        "error": error,
    }
    result = json.loads(args.json.read_text()) if args.json.exists() else {"rows": []}
    result["rows"].append(row)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(row, indent=2))
    shutil.rmtree(out, ignore_errors=True)


def _verify_summary(verify: dict | None) -> dict | None:
    if not verify:
        return None
    keys = (
        "ok",
        "reference",
        "max_rel_diff",
        "mean_rel_diff",
        "top1_agreement",
        "greedy_identical",
        "load_s",
    )
    return {
        **{k: verify.get(k) for k in ("ok", "reference", "reference_kind", "reference_why", "seconds")},
        "results": {q: {k: r.get(k) for k in keys if k in r} for q, r in verify["results"].items()},
    }


def _mem_total_gib() -> float:
    with open("/proc/meminfo", encoding="ascii") as f:
        return int(f.readline().split()[1]) / 2**20


if __name__ == "__main__":
    main()
