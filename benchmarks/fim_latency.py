"""Latency of editor code completion (fill-in-the-middle) through llama.cpp on the CPU.

A BBj developer's laptop runs the model through llama.cpp (Ollama, or `bbjtune serve gguf`), and an
editor asks for a completion every time typing pauses. This measures what one such request costs:
holes cut from a real BBj program the way the FIM suite cuts them (the rest of a statement, 40 lines
of the file before the cursor and 20 after, as editors send a window), the prompt Continue sends
(`<|fim_prefix|>…<|fim_suffix|>…<|fim_middle|>`), greedy decoding.

Two figures per hole:
- forced: exactly --tokens new tokens (end tokens banned), so every model does the same work:
  time to the first token (reading the prompt) and the whole request;
- natural: the model stops where it wants (at most --max-tokens): what the editor actually waits.

    python benchmarks/fim_latency.py                          # the real Qwen2.5-Coder-0.5B Q4_K_M GGUF
                                                              # when fetched (benchmarks/fetch_qwen05b.py),
                                                              # else the tiny test model
    python benchmarks/fim_latency.py --model FILE.gguf --threads 4 --holes 20
    python benchmarks/fim_latency.py --server                 # the same requests over HTTP through
                                                              # `bbjtune serve gguf` (the editor's path)

Wall times depend on what else runs on the machine; the CPU time of a request (this process, all
llama.cpp threads; in-process runs only) does not, and on an otherwise idle machine the wall time is
about CPU time / threads. Prints JSON (also written to benchmarks/results/) and a Markdown row for
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

END_TOKENS = (
    "<|endoftext|>",
    "<|im_end|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a .gguf file (default: the real 0.5B if fetched, else tiny:test)")
    p.add_argument(
        "--program",
        default=str(REPO / "examples" / "programs" / "vp_orderentry.bbj"),
        help="the BBj file the holes are cut from",
    )
    p.add_argument("--holes", type=int, default=12)
    p.add_argument("--tokens", type=int, default=32, help="forced completion length")
    p.add_argument("--max-tokens", type=int, default=64, help="limit of a natural completion")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--server", action="store_true", help="ask `bbjtune serve gguf` over HTTP instead")
    p.add_argument("--out", help="JSON file (default: benchmarks/results/fim_latency-<date>.json)")
    return p.parse_args()


def default_model() -> tuple[Path, str]:
    from fetch_qwen05b import default_gguf_path

    real = default_gguf_path()
    if real.exists():
        return real, "Qwen2.5-Coder-0.5B-Instruct Q4_K_M"
    from bbjtune.export.gguf import write_gguf
    from bbjtune.models.tiny import build_tiny

    path = Path(tempfile.gettempdir()) / "bbjtune-fim-latency-tiny.f16.gguf"
    if not path.exists():
        write_gguf(build_tiny("tiny:test"), path, "f16")
    return path, "tiny:test f16 (random weights)"


def holes(program: Path, n: int) -> list:
    from bbjtune.evaluate.fim import build_cases

    record = {"source": str(program), "text": program.read_text(encoding="utf-8", errors="replace")}
    cases, info = build_cases(
        [record],
        n,
        seed=0,
        kinds=["statement"],
        context_lines_before=40,
        context_lines_after=20,
        compiler="builtin",
    )
    if not cases:
        sys.exit(f"{program} gives no holes (does it compile? {info})")
    return cases


class InProcess:
    def __init__(self, model: Path, threads: int):
        import llama_cpp

        self.llm = llama_cpp.Llama(str(model), n_ctx=4096, n_threads=threads, verbose=False)
        self.ids = {t: self.llm.tokenize(t.encode(), add_bos=False, special=True) for t in END_TOKENS}
        self.ban = {str(v[0]): -100.0 for v in self.ids.values() if len(v) == 1}

    def complete(self, prompt: str, max_tokens: int, forced: bool) -> tuple[float, float, int, int, float]:
        """(seconds to the first token, seconds in all, prompt tokens, new tokens, CPU seconds)."""
        self.llm.reset()  # no KV cache carried from the previous hole: every request reads its prompt
        c0, t0 = time.process_time(), time.perf_counter()
        first, n = None, 0
        for chunk in self.llm.create_completion(
            prompt,
            max_tokens=max_tokens,
            temperature=0.0,
            stream=True,
            logit_bias=self.ban if forced else None,
        ):
            if first is None:
                first = time.perf_counter() - t0
            n += chunk["choices"][0]["finish_reason"] is None  # the last chunk only says why it ended
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        return (
            first or total,
            total,
            len(self.llm.tokenize(prompt.encode(), add_bos=False, special=True)),
            n,
            cpu,
        )


class OverHttp:
    def __init__(self, model: Path, threads: int):
        import httpx

        from serving import free_port, start_bbjtune

        port = free_port()
        self.base, self.http = f"http://127.0.0.1:{port}/v1", httpx.Client(timeout=300)
        self.proc = start_bbjtune(
            ["serve", "gguf", str(model), "--port", str(port), "--threads", str(threads)],
            f"{self.base}/models",
        )
        import llama_cpp  # only to look up the end tokens' ids, as InProcess does

        vocab = llama_cpp.Llama(str(model), vocab_only=True, verbose=False)
        self.ban = {
            str(vocab.tokenize(t.encode(), add_bos=False, special=True)[0]): -100.0 for t in END_TOKENS
        }

    def complete(self, prompt: str, max_tokens: int, forced: bool) -> tuple[float, float, int, int, float]:
        body = {"model": "m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "stream": True}
        if forced:
            body["logit_bias"] = self.ban
        t0 = time.perf_counter()
        first, n = None, 0
        with self.http.stream("POST", f"{self.base}/completions", json=body) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    if first is None:
                        first = time.perf_counter() - t0
                    n += json.loads(line[6:])["choices"][0]["finish_reason"] is None
        return first or 0.0, time.perf_counter() - t0, -1, n, float("nan")  # the server's CPU is not ours

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _shown(path: Path) -> str:
    """The path inside the repository, else the file name."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def main() -> None:
    args = parse_args()
    model, name = (Path(args.model), Path(args.model).name) if args.model else default_model()
    cases = holes(Path(args.program), args.holes)
    runner = OverHttp(model, args.threads) if args.server else InProcess(model, args.threads)
    runner.complete(cases[0].prompt(), 4, forced=True)  # warm-up: weights paged in
    forced, natural = [], []
    for case in cases:
        forced.append(runner.complete(case.prompt(), args.tokens, forced=True))
        natural.append(runner.complete(case.prompt(), args.max_tokens, forced=False))
    if args.server:
        runner.close()

    def med(rows: list, i: int) -> float:
        return round(statistics.median(r[i] for r in rows), 3)

    result = {
        "date": date.today().isoformat(),
        "model": name,
        "gguf": model.name,  # names only: a result file must not carry this machine's paths
        "path": "http" if args.server else "llama.cpp",
        "machine": f"{os.cpu_count()}-core CPU, {platform.processor() or platform.machine()}, load average "
        f"{os.getloadavg()[0]:.1f}",
        "threads": args.threads,
        "holes": len(cases),
        "program": _shown(Path(args.program)),
        "prompt_tokens_median": med(forced, 2) if not args.server else None,
        "forced": {
            "tokens": args.tokens,
            "first_token_s": med(forced, 0),
            "total_s": med(forced, 1),
            "cpu_s": med(forced, 4) if not args.server else None,
            "total_s_max": round(max(r[1] for r in forced), 3),
            "tokens_per_s": round(args.tokens / statistics.median(r[1] - r[0] for r in forced), 1),
        },
        "natural": {
            "max_tokens": args.max_tokens,
            "tokens_median": med(natural, 3),
            "total_s": med(natural, 1),
            "cpu_s": med(natural, 4) if not args.server else None,
            "stopped_before_limit": sum(r[3] < args.max_tokens for r in natural),
        },
    }
    out = (
        Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"fim_latency-{result['date']}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    f, nat = result["forced"], result["natural"]
    print(
        f"| {result['date']} | {result['machine']}, {args.threads} threads | `python benchmarks/fim_latency.py"
        f"{' --server' if args.server else ''}` | {name}: {f['tokens']} tokens in **{f['total_s']} s** "
        f"({f['cpu_s']} CPU-s) "
        f"(first token {f['first_token_s']} s, {f['tokens_per_s']} tokens/s); natural completions "
        f"{nat['tokens_median']} tokens in {nat['total_s']} s |"
    )


if __name__ == "__main__":
    main()
