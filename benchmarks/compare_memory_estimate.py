"""The dry run's memory estimate next to the peak memory a real run measures.

Runs bbjtune's SFT path (hf backend) on random-weight Qwen2.5-Coder architectures for a few steps
per case, each in its own process, and prints estimate, measured peak (torch's max allocated) and
the error. The cases vary what the estimate models: precision (LoRA bf16 / QLoRA), batch x
sequence, gradient checkpointing on/off.

    python benchmarks/compare_memory_estimate.py --out benchmarks/results/memory_estimate.json
    python benchmarks/compare_memory_estimate.py --smoke          # CPU: checks the script, not the numbers
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # noqa: E402

# (architecture, QLoRA, batch, sequence, gradient checkpointing)
CASES = [
    ("7b", False, 4, 2048, True),
    ("7b", True, 4, 2048, True),
    ("7b", True, 8, 2048, True),
    ("7b", True, 2, 4096, True),
    ("7b", True, 1, 2048, False),
    ("14b", True, 4, 2048, True),
]
SMOKE_CASES = [("smoke", False, 2, 128, True), ("smoke", True, 2, 128, False)]


def run_case(case: tuple, steps: int, work_dir: Path, timeout: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    cmd = [
        sys.executable,
        __file__,
        "--case",
        json.dumps(case),
        "--steps",
        str(steps),
        "--work-dir",
        str(work_dir),
        "--json",
        str(out),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        row = (
            json.loads(out.read_text())
            if out.exists() and out.stat().st_size
            else {
                "status": f"failed: exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1][:200]}"
            }
        )
    except subprocess.TimeoutExpired:
        row = {"status": f"failed: timed out after {timeout} s"}
    finally:
        out.unlink(missing_ok=True)
    row["case"] = case
    print(f"  {case}: {row.get('status')}", file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "bbjtune-bench")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    a = parser.parse_args()
    a.work_dir.mkdir(parents=True, exist_ok=True)
    if a.case:
        arch, quant, batch, seq, ckpt = json.loads(a.case)
        s = tt.Settings(
            batch=batch, seq=seq, steps=a.steps, warmup=1, smoke=arch == "smoke", gradient_checkpointing=ckpt
        )
        row = tt.measure_row("memory", arch, quant, "full", "bbjtune-hf", s, a.work_dir)
        a.json.write_text(json.dumps(row, default=str))
        return
    rows = [run_case(c, a.steps, a.work_dir, a.timeout) for c in (SMOKE_CASES if a.smoke else CASES)]
    key = "peak_allocated_gib" if any("peak_allocated_gib" in r for r in rows) else "peak_rss_gib"
    lines = [
        "| architecture | weights | batch x seq | checkpointing | estimate GiB | measured GiB | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        arch, quant, batch, seq, ckpt = r["case"]
        if r.get("status") != "ok":
            lines.append(
                f"| {arch} | {'nf4' if quant else 'bf16'} | {batch} x {seq} | {ckpt} | {r.get('status')} | | |"
            )
            continue
        error = r["estimate_gib"] / r[key] - 1
        lines.append(
            f"| {arch} | {'nf4' if quant else 'bf16'} | {batch} x {seq} | {'on' if ckpt else 'off'} "
            f"| {r['estimate_gib']:.1f} | {r[key]:.1f} | {100 * error:+.0f}% |"
        )
    print(
        "Memory estimate vs measured peak ("
        + (
            "CPU RSS: the estimate is for GPUs"
            if key == "peak_rss_gib"
            else "torch max allocated, CUDA context excluded"
        )
        + ")\n"
    )
    print("\n".join(lines))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"rows": rows, "settings": asdict(tt.Settings())}, indent=2, default=str))


if __name__ == "__main__":
    main()
