"""Tables and plots for experiments/real-0.5b/RESULTS.md from the run's files.

    python experiments/real-0.5b/report.py runs/real-0.5b

Reads eval/<label>/results.json for every evaluated model and metrics.jsonl; writes
experiments/real-0.5b/results.md (the measured tables, pasted into RESULTS.md) and
experiments/real-0.5b/{loss_curves,compile_by_generation}.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
# label in eval/ → what it is, in table order
MODELS = {
    "base-q8_0": "base (Qwen2.5-Coder-0.5B-Instruct), q8_0",
    "stage1-q8_0": "stage 1 only (CPT), q8_0",
    "tuned-q8_0": "stage 1 + 2 (CPT + SFT), q8_0",
    "tuned-q4_k_m": "stage 1 + 2, exported q4_k_m",
    "base-q4_k_m": "base, the original q4_k_m file",
    "tuned-hf": "stage 1 + 2, bf16 on the GPU (transformers)",
}
GENERATIONS = ("character", "vpro5", "gui", "dwc")


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def load(run: Path) -> dict[str, dict]:
    out = {}
    for label in MODELS:
        f = run / "eval" / label / "results.json"
        if f.exists():
            out[label] = json.loads(f.read_text())
    return out


def headline_table(results: dict[str, dict]) -> str:
    rows = ["| model | compile@1 | patterns | factual | HumanEval pass@1 | prompts |",
            "|---|---|---|---|---|---|"]
    for label, r in results.items():
        he = (r.get("humaneval") or {}).get("pass_at_k", {}).get("1") if r.get("humaneval") else None
        rows.append(f"| {MODELS[label]} | {pct(r['compile_at_k'].get('1'))} | {pct(r.get('patterns_pass_rate'))} | "
                    f"{pct(r.get('factual_accuracy'))} | {pct(he)} | {r['n_prompts']} |")
    return "\n".join(rows)


def breakdown_table(results: dict[str, dict], key: str) -> str:
    groups = sorted({g for r in results.values() for g in r[key]},
                    key=lambda g: (GENERATIONS.index(g) if g in GENERATIONS else 99, g))
    rows = ["| " + key.replace("by_", "") + " | " + " | ".join(label for label in results) + " |",
            "|---" * (len(results) + 1) + "|"]
    for g in groups:
        cells = [pct(r[key].get(g, {}).get("compile_at_k", {}).get("1")) for r in results.values()]
        n = next(r[key][g]["n_prompts"] for r in results.values() if g in r[key])
        rows.append(f"| {g} ({n}) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_losses(run: Path) -> Path | None:
    f = run / "metrics.jsonl"
    if not f.exists():
        return None
    rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, stage in zip(axes, ("cpt", "sft")):
        train = [(r["step"], r["loss"]) for r in rows if r.get("stage") == stage and "loss" in r]
        held = [(r["step"], r["eval_loss"]) for r in rows if r.get("stage") == stage and "eval_loss" in r]
        if train:
            ax.plot(*zip(*train), label="training loss")
        if held:
            ax.plot(*zip(*held), "o-", label="held-out loss")
        ax.set_title({"cpt": "stage 1: continued pretraining", "sft": "stage 2: instruction tuning"}[stage])
        ax.set_xlabel("optimizer step")
        ax.legend()
    fig.tight_layout()
    out = HERE / "loss_curves.png"
    fig.savefig(out, dpi=110)
    return out


def plot_generations(results: dict[str, dict]) -> Path:
    labels = [label for label in ("base-q8_0", "stage1-q8_0", "tuned-q8_0", "tuned-q4_k_m") if label in results]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / max(len(labels), 1)
    for i, label in enumerate(labels):
        vals = [100 * (results[label]["by_generation"].get(g, {}).get("compile_at_k", {}).get("1") or 0)
                for g in GENERATIONS]
        ax.bar([x + i * width for x in range(len(GENERATIONS))], vals, width, label=label)
    ax.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(GENERATIONS))], GENERATIONS)
    ax.set_ylabel("compile@1 (%)")
    ax.legend()
    fig.tight_layout()
    out = HERE / "compile_by_generation.png"
    fig.savefig(out, dpi=110)
    return out


def main(run: Path) -> None:
    results = load(run)
    if not results:
        sys.exit(f"no evaluation results under {run}/eval")
    parts = ["## Headline (both suites: bbj-core + bbj-challenge)", headline_table(results),
             "## compile@1 by BBj generation", breakdown_table(results, "by_generation"),
             "## compile@1 by category", breakdown_table(results, "by_category"),
             "## compile@1 by task", breakdown_table(results, "by_task")]
    (HERE / "results.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    plot_losses(run)
    plot_generations(results)
    print("\n\n".join(parts))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/real-0.5b"))
