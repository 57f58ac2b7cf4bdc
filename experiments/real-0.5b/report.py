"""Tables and plots for experiments/real-0.5b/RESULTS.md from the run's files.

    python experiments/real-0.5b/report.py runs/real-0.5b

Reads eval/<label>/results.json for every evaluated model and metrics.jsonl; writes
experiments/real-0.5b/results.md (the measured tables, pasted into RESULTS.md) and
experiments/real-0.5b/{loss_curves,compile_by_generation,tradeoff}.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
# label in eval/ → what it is, in table order. run.sh's eval step writes base, stage1 and tuned, its
# export step the GGUF labels; SWEEP below comes from its sweep and replay steps.
MODELS = {
    "base": "base: Qwen2.5-Coder-0.5B-Instruct",
    "stage1": "stage 1 only (CPT, 2 epochs)",
    "tuned": "stage 1 + 2 (CPT + SFT 2e-4 × 8 epochs)",
    "tuned-q4_k_m": "stage 1 + 2, exported q4_k_m GGUF (llama.cpp, CPU)",
    "tuned-q8_0": "stage 1 + 2, exported q8_0 GGUF (llama.cpp, CPU)",
    "base-q4_k_m": "base, its own q4_k_m GGUF (llama.cpp, CPU)",
}
SWEEP = {
    "instruct-sft-only": "no stage 1; SFT 1e-4 × 3 (the one-stage Instruct shortcut)",
    "sft-5e-5x3": "stage 1 + SFT 5e-5 × 3 epochs",
    "sft-1e-4x3": "stage 1 + SFT 1e-4 × 3 epochs",
    "cpt6-sft-1e-4x3": "stage 1 × 6 epochs + SFT 1e-4 × 3 epochs",
    "tuned": "stage 1 + SFT 2e-4 × 8 epochs (chosen)",
    "sft-replay-20": "stage 1 + SFT 2e-4 × 8 epochs, 20 % replay (the base model's own general answers)",
}
GENERATIONS = ("character", "vpro5", "gui", "dwc")


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def load(run: Path, labels=MODELS) -> dict[str, dict]:
    out = {}
    for label in labels:
        f = run / "eval" / label / "results.json"
        if f.exists():
            out[label] = json.loads(f.read_text())
    return out


def headline_table(results: dict[str, dict], names: dict[str, str] = MODELS) -> str:
    rows = [
        "| model | compile@1 | compile@1 bbj-core | compile@1 bbj-challenge | patterns | factual "
        "| HumanEval pass@1 | BBj prompts |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        he = (r.get("humaneval") or {}).get("pass_at_1")
        suite = {
            s: r["by_suite"].get(s, {}).get("compile_at_k", {}).get("1")
            for s in ("bbj-core", "bbj-challenge")
        }
        rows.append(
            f"| {names[label]} (`{label}`) | {pct(r['compile_at_k'].get('1'))} | {pct(suite['bbj-core'])} | "
            f"{pct(suite['bbj-challenge'])} | {pct(r.get('patterns_pass_rate'))} | "
            f"{pct(r.get('factual_accuracy'))} | {pct(he)} | {r['n_prompts']} |"
        )
    return "\n".join(rows)


def breakdown_table(results: dict[str, dict], key: str) -> str:
    groups = sorted(
        {g for r in results.values() for g in r[key]},
        key=lambda g: (GENERATIONS.index(g) if g in GENERATIONS else 99, g),
    )
    rows = [
        "| " + key.replace("by_", "") + " | " + " | ".join(label for label in results) + " |",
        "|---" * (len(results) + 1) + "|",
    ]
    for g in groups:
        cells = [pct(r[key].get(g, {}).get("compile_at_k", {}).get("1")) for r in results.values()]
        n = next(r[key][g]["n_prompts"] for r in results.values() if g in r[key])
        rows.append(f"| {g} ({n}) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _save(fig, name: str) -> Path:
    fig.tight_layout()
    out = HERE / name
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def eval_overlap(run: Path, n: int = 8) -> dict[str, float]:
    """The largest share of an evaluation prompt's n-word sequences found in what was trained on
    (stage 1 texts, stage 2 conversations whole), with the data stage's own words and n-grams:
    the after-the-fact decontamination check."""
    from bbjtune.decontamination import ngrams, words

    def grams(texts) -> set[tuple[str, ...]]:
        return {g for t in texts for g in ngrams(words(t), n)}

    def rows(name: str):
        return [
            json.loads(line)
            for line in (run / "data" / name).read_text(encoding="utf-8").splitlines()
            if line
        ]

    trained = {
        "stage 1": grams(r["text"] for r in rows("cpt.jsonl")),
        "stage 2": grams("\n".join(m["content"] for m in r["messages"]) for r in rows("train.jsonl")),
    }
    prompts = [
        json.loads(line)["prompt"]
        for f in sorted(Path("evals").glob("*.jsonl"))
        for line in f.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    worst = {k: 0.0 for k in trained}
    for p in prompts:
        own = grams([p])
        for k, seen in trained.items():
            if own:
                worst[k] = max(worst[k], len(own & seen) / len(own))
    return worst


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
    return _save(fig, "loss_curves.png")


def plot_generations(results: dict[str, dict]) -> Path:
    labels = [label for label in ("base", "stage1", "tuned", "tuned-q4_k_m") if label in results]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / max(len(labels), 1)
    for i, label in enumerate(labels):
        vals = [
            100 * (results[label]["by_generation"].get(g, {}).get("compile_at_k", {}).get("1") or 0)
            for g in GENERATIONS
        ]
        ax.bar([x + i * width for x in range(len(GENERATIONS))], vals, width, label=label)
    ax.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(GENERATIONS))], GENERATIONS)
    ax.set_ylabel("compile@1 (%)")
    ax.legend()
    return _save(fig, "compile_by_generation.png")


def plot_tradeoff(base: dict | None, stage1: dict | None, sweep: dict[str, dict]) -> Path | None:
    """compile@1 against HumanEval pass@1 for every recipe: what BBj costs in Python."""
    points = {**({"base": base} if base else {}), **({"stage1": stage1} if stage1 else {}), **sweep}
    points = {k: r for k, r in points.items() if (r.get("humaneval") or {}).get("pass_at_1") is not None}
    if len(points) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, r in points.items():
        x, y = 100 * r["humaneval"]["pass_at_1"], 100 * r["compile_at_k"]["1"]
        ax.scatter(x, y, color="tab:gray" if label in ("base", "stage1") else "tab:blue")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if base:
        bx, by = 100 * base["humaneval"]["pass_at_1"], 100 * base["compile_at_k"]["1"]
        ax.axvline(bx - 5, color="tab:red", linestyle=":", label="HumanEval target (base − 5)")
        ax.axhline(by + 30, color="tab:green", linestyle=":", label="compile@1 target (base + 30)")
    ax.set_xlabel("HumanEval pass@1 (%)")
    ax.set_ylabel("BBj compile@1 (%)")
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, "tradeoff.png")


def main(run: Path) -> None:
    results = load(run)
    if not results:
        sys.exit(f"no evaluation results under {run}/eval")
    parts = ["## Headline (both suites: bbj-core + bbj-challenge)", headline_table(results)]
    sweep = load(run, SWEEP)
    if len(sweep) > 1:
        parts += ["## Recipe sweep (same data, same stage 1 unless said)", headline_table(sweep, SWEEP)]
    parts += [
        "## compile@1 by BBj generation",
        breakdown_table(results, "by_generation"),
        "## compile@1 by category",
        breakdown_table(results, "by_category"),
        "## compile@1 by task",
        breakdown_table(results, "by_task"),
    ]
    if (run / "data" / "train.jsonl").exists():
        overlap = eval_overlap(run)
        parts += [
            "## Decontamination, checked after the fact",
            "Largest share of one evaluation prompt's 8-word sequences (the data stage's words) found in the training data: "
            + ", ".join(f"{k} {100 * v:.1f} %" for k, v in overlap.items())
            + ".",
        ]
    (HERE / "results.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    plot_losses(run)
    plot_generations(results)
    plot_tradeoff(results.get("base"), results.get("stage1"), sweep)
    print("\n\n".join(parts))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/real-0.5b"))
