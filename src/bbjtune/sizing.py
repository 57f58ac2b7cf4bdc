"""What an export needs in host RAM and disk, estimated from the parameter count before it starts.

`estimate_export` counts, for the chosen merge path (streaming or HF) and GGUF types, the files
written (bytes per parameter below), the temporary files at their peak, and the RAM of each step;
`check_export` refuses with one line (needed, free, what to change) when the disk or the RAM cannot
take it, and warns when the margin is thin. `bbjtune train --dry-run` prints the same estimate.

The RAM figures follow the code's arithmetic, as upper bounds, checked against a random 7B export
on a 2-core CPU (benchmarks/RESULTS.md, "Export at scale"):
- streaming merge + GGUF writer: float32-sized copies of the largest tensor (the embeddings: the
  tensor read from safetensors and the merge's result, the writer's float32 array and its f16 copy,
  about two float32 copies in all; gguf's numpy q8_0 quantizer makes one more), plus the
  Python/torch baseline, and the same for each further tensor the writer prepares at once
  (ENCODE_WORKERS: a layer's MLP matrix, far smaller). It does not grow with the number of layers;
- HF merge: the whole model in the merge dtype (float32 on a CPU: 4 bytes per parameter);
- verification against the HF model: the merged model in float32 (hf_reference loads it so);
  against a 16-bit GGUF instead: llama.cpp maps the file, so about its size.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbjtune.errors import BbjtuneError
from bbjtune.models.architecture import Architecture

GiB = 2**30

# Bytes per parameter of each file (k-quants: the averages llama.cpp reports for 7B models).
BYTES_PER_PARAM = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 1.07,
    "q6_k": 0.83,
    "q5_k_m": 0.72,
    "q4_k_m": 0.61,
    "q4_0": 0.57,
    "q3_k_m": 0.49,
    "q2_k": 0.42,
}
# export/gguf.py writes these itself (kept here so the estimate imports no gguf); the rest go through llama.cpp
WRITER_TYPES = ("f32", "f16", "bf16", "q8_0")
REFERENCE_TYPES = ("f32", "f16", "bf16")  # GGUFs precise enough to stand in for the HF model
BASELINE_RAM = int(1.5 * GiB)  # Python, torch, tokenizer, llama.cpp's context: measured ~1.2 GiB at 7B
STREAM_COPIES = 2  # float32-sized copies of the largest tensor alive at once while streaming (see above)
ENCODE_WORKERS = 4  # tensors the GGUF writer prepares at once (export/gguf.py); each beyond the first holds a
# float32 copy or so of a layer's largest matrix (its MLP weight), not of the embeddings
Q8_EXTRA_COPIES = 1  # gguf's numpy q8_0 quantizer: its scaled and rounded blocks (7B measured: +1.9 GiB)
DISK_MARGIN = 1.05  # file sizes vary a little with the tokenizer and the k-quant mixes
WARN_MARGIN = 1.15


@dataclass
class ExportEstimate:
    """Bytes of each file and each step's peak RAM (all in bytes)."""

    params: int
    path: str  # "stream" or "hf"
    files: dict[str, int]  # GGUF type → bytes of the file kept
    scratch: dict[str, int] = field(default_factory=dict)  # temporary files (f16 for llama.cpp, merged/)
    merged: int = 0  # merged safetensors kept (export.merged)
    disk_peak: int = 0
    ram: dict[str, int] = field(default_factory=dict)  # step → peak RAM
    verify_reference: str = "hf"  # "hf" when the merged model fits in RAM, else "gguf"

    @property
    def ram_peak(self) -> int:
        return max(self.ram.values(), default=0)

    def to_json(self) -> dict[str, Any]:
        gib = lambda b: round(b / GiB, 2)  # noqa: E731
        return {
            "params": self.params,
            "merge_path": self.path,
            "files_gib": {k: gib(v) for k, v in self.files.items()},
            "scratch_gib": {k: gib(v) for k, v in self.scratch.items()},
            "merged_gib": gib(self.merged),
            "disk_peak_gib": gib(self.disk_peak),
            "ram_gib": {k: gib(v) for k, v in self.ram.items()},
            "ram_peak_gib": gib(self.ram_peak),
            "verify_reference": self.verify_reference,
        }


def largest_tensor(arch: Architecture) -> int:
    """Elements of the largest weight: the embeddings, or an MLP matrix in a model with a small vocabulary."""
    return max(arch.vocab * arch.hidden, arch.intermediate * arch.hidden)


def estimate_export(
    arch: Architecture,
    quants: list[str],
    *,
    streaming: bool,
    keep_merged: bool = False,
    lora_gguf: bool = False,
    verify: bool = True,
    merge_bytes: int = 4,
    save_bytes: int = 2,
    available_ram: int | None = None,
    kquant_source: str = "f16",
) -> ExportEstimate:
    """The export's files, temporary files at their peak, and RAM per step.

    `merge_bytes`: bytes per parameter of the HF merge's dtype (float32 on a CPU, the default);
    `save_bytes`: of the merged checkpoint (the base's declared dtype: bf16 for Qwen2.5).
    `available_ram` decides what verification compares against (see `verify_reference`).
    `kquant_source`: the file llama.cpp quantizes the k-quants from (f16, or q8_0 to spare the disk).
    """
    n = arch.params
    files = {q: int(n * BYTES_PER_PARAM[q]) for q in quants}
    llama_types = [q for q in quants if q not in WRITER_TYPES]
    scratch: dict[str, int] = {}
    if llama_types and kquant_source not in quants:
        scratch[f"{kquant_source} (llama.cpp's input)"] = int(n * BYTES_PER_PARAM[kquant_source])
    merged = int(n * save_bytes) if not streaming else 0
    if not streaming and not keep_merged:
        scratch["merged/ (temporary)"] = merged
        merged_kept = 0
    else:
        merged_kept = merged if keep_merged else 0

    big = largest_tensor(arch) * 4
    # the tensors prepared beside the largest one: a layer's largest matrix each, in float32 (never more
    # than the rest of the model)
    beside = min((ENCODE_WORKERS - 1) * arch.intermediate * arch.hidden * 4, max(n * 4 - big, 0))
    ram: dict[str, int] = {}
    if streaming:
        copies = STREAM_COPIES + (Q8_EXTRA_COPIES if "q8_0" in quants else 0)
        ram["merge+write"] = BASELINE_RAM + copies * (big + beside)
    else:
        ram["merge"] = BASELINE_RAM + int(n * merge_bytes * 1.05)
        ram["write"] = BASELINE_RAM + STREAM_COPIES * (big + beside)
    if llama_types:
        ram["quantize"] = BASELINE_RAM + 2 * big
    reference = "hf"
    if verify:
        hf_ram = BASELINE_RAM + int(n * 4 * 1.05)
        if available_ram is not None and hf_ram > available_ram:
            reference = "gguf"
            if not any(q in quants for q in REFERENCE_TYPES) and "f16 (llama.cpp's input)" not in scratch:
                scratch["f16 (verification reference)"] = int(n * 2)
            ref_file = max(
                [files[q] for q in quants if q in REFERENCE_TYPES] + list(scratch.values()) + [int(n * 2)]
            )
            ram["verify"] = BASELINE_RAM + ref_file
        else:
            ram["verify"] = hf_ram
    lora_base = int(n * 2) if lora_gguf else 0
    # the temporary f16 is deleted once verified, before the GGUF LoRA's base is written
    disk_peak = sum(files.values()) + merged_kept + max(sum(scratch.values()), lora_base)
    return ExportEstimate(
        n, "stream" if streaming else "hf", files, scratch, merged_kept, disk_peak, ram, reference
    )


def configured_kquant_source(setting: str) -> str:
    """export.kquant_source before the disk is looked at: auto starts from f16, llama.cpp's usual input."""
    return "f16" if setting == "auto" else setting


def choose_kquant_source(
    setting: str, quants: list[str], free: int, estimate: Callable[[str], ExportEstimate]
) -> tuple[str, ExportEstimate]:
    """The file llama.cpp makes the k-quants from (export.kquant_source), with the export's estimate for it.

    auto: f16, unless the disk cannot hold that route and can hold the q8_0 one (f16 not asked for)."""
    source = configured_kquant_source(setting)
    est = estimate(source)
    if setting == "auto" and any(q not in WRITER_TYPES for q in quants) and "f16" not in quants:
        small = estimate("q8_0")
        if est.disk_peak * DISK_MARGIN > free >= small.disk_peak * DISK_MARGIN:
            return "q8_0", small
    return source, est


def choose_merged(
    setting: bool | str, free: int, ram: int, estimate: Callable[[bool], ExportEstimate]
) -> tuple[bool, str | None]:
    """export.merged as a decision, and why auto said no (None otherwise).

    auto: keep merged/ when the export that writes it (`estimate(True)`) fits this machine's free disk
    and RAM, as check_export counts them; otherwise stream the merge into the GGUF files."""
    if setting != "auto":
        return bool(setting), None
    est = estimate(True)
    disk = est.disk_peak * DISK_MARGIN
    need_ram = max(v for k, v in est.ram.items() if k != "verify")
    short = []
    if disk > free:
        short.append(
            f"{free / GiB:.1f} GiB of free disk cannot hold merged/ ({est.merged / GiB:.1f} GiB) beside the "
            f"GGUF files ({disk / GiB:.1f} GiB needed)"
        )
    if need_ram > ram:
        short.append(
            f"{ram / GiB:.1f} GiB of RAM cannot merge the whole model ({need_ram / GiB:.1f} GiB needed)"
        )
    return not short, "; ".join(short) or None


@dataclass
class ExportSizing:
    """One export's estimates on one machine, as the export stage and `train --dry-run` both decide them:
    the configured GGUF types and checks, this machine's free disk and RAM."""

    arch: Architecture
    quants: list[str]
    kquant_setting: str
    lora_gguf: bool
    verify: bool
    merge_bytes: int
    free: int
    ram: int
    save_bytes: int = 2

    def estimate(self, kquant_source: str, keep: bool, streaming: bool) -> ExportEstimate:
        return estimate_export(
            self.arch,
            self.quants,
            streaming=streaming,
            keep_merged=keep,
            lora_gguf=self.lora_gguf,
            verify=self.verify,
            merge_bytes=self.merge_bytes,
            save_bytes=self.save_bytes,
            available_ram=self.ram,
            kquant_source=kquant_source,
        )

    def routed(self, keep: bool, streaming: bool) -> tuple[str, ExportEstimate]:
        """The k-quant source export.kquant_source picks here, with its estimate."""
        return choose_kquant_source(
            self.kquant_setting, self.quants, self.free, lambda s: self.estimate(s, keep, streaming)
        )

    def merged(self, setting: bool | str) -> tuple[bool, str | None]:
        """export.merged decided here (choose_merged), and why auto said no."""
        return choose_merged(setting, self.free, self.ram, lambda keep: self.routed(keep, not keep)[1])


# ----------------------------------------------------------------------------- the machine


def available_ram() -> int:
    """Bytes of RAM the kernel can give without swapping (MemAvailable)."""
    import psutil

    return int(psutil.virtual_memory().available)


def free_disk(where: Path) -> int:
    probe = Path(where)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_export(
    out: Path, est: ExportEstimate, *, free: int | None = None, ram: int | None = None, warn=None
) -> list[str]:
    """Refuse (BbjtuneError) when disk or RAM is short; return warnings when the margin is thin."""
    free = free_disk(out) if free is None else free
    ram = available_ram() if ram is None else ram
    needed_disk = int(est.disk_peak * DISK_MARGIN)
    if free < needed_disk:
        raise BbjtuneError(
            f"not enough disk space for the export: about {needed_disk / GiB:.1f} GiB needed in {out} "
            f"at the peak ({_disk_parts(est)}), {free / GiB:.1f} GiB free",
            "free space, write fewer GGUF types (export.gguf), set export.merged: false, set "
            "export.kquant_source: q8_0 (no f16 file for the k-quants), or set export.output_dir to a larger disk",
        )
    steps = {k: v for k, v in est.ram.items() if k != "verify"}  # verification adapts (see verify_reference)
    step, needed_ram = max(steps.items(), key=lambda kv: kv[1])
    if ram < needed_ram:
        change = (
            "set export.merged: false (the streaming merge needs about "
            f"{_stream_ram(est) / GiB:.1f} GiB) or run export on a machine with more RAM"
            if est.path == "hf"
            else "close other programs or run export on a machine with more RAM"
        )
        raise BbjtuneError(
            f"not enough RAM for the export's {step} step: about {needed_ram / GiB:.1f} GiB needed, "
            f"{ram / GiB:.1f} GiB available",
            change,
        )
    warnings = []
    if free < est.disk_peak * WARN_MARGIN:
        warnings.append(f"disk is tight: {free / GiB:.1f} GiB free for a {est.disk_peak / GiB:.1f} GiB peak")
    if ram < max(est.ram.values()) * WARN_MARGIN:
        warnings.append(
            f"RAM is tight: {ram / GiB:.1f} GiB available, the export's peak is about {est.ram_peak / GiB:.1f} GiB"
        )
    return warnings


def _disk_parts(est: ExportEstimate) -> str:
    parts = [f"{q} {b / GiB:.1f}" for q, b in est.files.items()]
    parts += [f"{k} {b / GiB:.1f}" for k, b in est.scratch.items()]
    if est.merged:
        parts.append(f"merged/ {est.merged / GiB:.1f}")
    return ", ".join(parts)


def _stream_ram(est: ExportEstimate) -> int:
    return est.ram.get("write", BASELINE_RAM)
