"""Scale rehearsal: a 7B/14B/32B preset end to end on one GPU, with random weights of the real architecture.

Every step is the CLI a user runs (`bbjtune data prepare`, `train --stage cpt`, `train --stage sft`,
`export`, `eval run`, `serve gguf` + one request), on `random:qwen2.5-coder-<size>` (the published
architecture, random bf16 weights, the Qwen2.5 tokenizer) through the preset
`qwen2.5-coder-<size>-base`. Training is bounded by `--steps` optimizer steps per stage; evaluation by
`eval.limit` and `eval.humaneval.limit`. While a step runs, a thread samples every 0.5 s:

- GPU memory of the step's processes (nvidia-smi's compute apps; where it lists none of them, e.g. in
  another pid namespace, the whole card's memory in use, and the row says `peak_gpu_of: card`),
- host RAM: the resident memory of the step's whole process tree,
- disk: bytes under the work directory beyond what was there when the rehearsal started: the random
  base is built there (BBJTUNE_CACHE_DIR), and the export's scratch files live in its export directory,
  so two rehearsals on one disk do not count each other's files. (TMPDIR stays as it is: HumanEval's
  sandboxed processes run as another user, who could not enter a temporary directory under /root.)

A stage's own manifest records its process's peak GPU memory (`peaks`, torch's reserved bytes); a row
takes that figure where nvidia-smi could not tell the step's processes apart (`peak_gpu_of: torch`).

    python benchmarks/scale_rehearsal.py --size 7b --work /big/disk/scale \\
        --data runs/prepared-data --json benchmarks/results/scale-2026-12-08-gpu.json

Writes {date, machine, rows: [{model, stage, ok, wall_s, peak_gpu_gib, peak_ram_gib, peak_disk_gib,
error, metrics}]}, appending to --json when it exists (one file for 7B and 14B). `--data` is a
prepared data directory (`bbjtune data prepare`'s output) to reuse; without it the data step prepares
examples/chatml. Needs the Qwen2.5 tokenizer (BBJTUNE_TOKENIZER_SOURCE or benchmarks/fetch_qwen05b.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

GiB = 2**30
ROOT = Path(__file__).resolve().parent.parent


def gpu_used_bytes(pids: set[int]) -> tuple[int | None, bool]:
    """(bytes, per_process): GPU memory of the processes `pids` when nvidia-smi lists any of them, else
    the memory in use on the first GPU (other jobs included); None without nvidia-smi."""

    def query(*args: str) -> list[str]:
        return subprocess.run(
            ["nvidia-smi", *args, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()

    try:
        mine = 0
        for line in query("--query-compute-apps=pid,used_memory"):
            pid, _, used = line.partition(",")
            if pid.strip().isdigit() and int(pid) in pids and used.strip().isdigit():
                mine += int(used) * 2**20
        if mine:
            return mine, True
        out = query("--query-gpu=memory.used")
        return (int(out[0]) * 2**20 if out else None), False
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None, False


def process_tree(pid: int) -> tuple[int, set[int]]:
    """Resident bytes of `pid` and all its descendants, and their pids."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        seen.add(p)
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total, seen


def tree_bytes(root: Path) -> int:
    """Bytes allocated to the files under `root` (files that vanish while it walks are skipped)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                continue
    return total


class Monitor(threading.Thread):
    """Peak GPU memory, process-tree RSS and extra disk while one step runs."""

    def __init__(self, pid: int, work: Path, disk0: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.work, self.disk0, self.every = pid, work, disk0, every
        self.mine = self.card = self.ram = self.disk = 0  # GPU: the step's processes, the whole card
        self.gpu_seen = False
        self.stop = threading.Event()

    def sample(self) -> None:
        rss, pids = process_tree(self.pid)
        used, per_process = gpu_used_bytes(pids)
        if used is not None:
            self.gpu_seen = True
            if per_process:
                self.mine = max(self.mine, used)
            else:
                self.card = max(self.card, used)
        self.ram = max(self.ram, rss)
        self.disk = max(self.disk, tree_bytes(self.work) - self.disk0)

    def run(self) -> None:
        self.sample()  # a step shorter than one interval is seen at least once
        while not self.stop.wait(self.every):
            self.sample()

    def peaks(self) -> dict[str, float | None]:
        return {
            # the step's own processes (nvidia-smi's compute apps) when it listed them, else the whole card
            "peak_gpu_gib": round((self.mine or self.card) / GiB, 2) if self.gpu_seen else None,
            "peak_gpu_of": ("process" if self.mine else "card") if self.gpu_seen else None,
            "peak_ram_gib": round(self.ram / GiB, 2),
            "peak_disk_gib": round(self.disk / GiB, 2),
        }


def run_step(name: str, argv: list[str], work: Path, disk0: int, log: Path, env: dict) -> dict:
    """Run one CLI step, sampled; returns its row (without the model)."""
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(argv)}", flush=True)
    t0 = time.time()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        mon = Monitor(proc.pid, work, disk0)
        mon.start()
        rc = proc.wait()
        mon.stop.set()
    wall = time.time() - t0
    tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-12:]
    print(f"    rc={rc} in {wall:.0f} s", flush=True)
    return {
        "stage": name,
        "ok": rc == 0,
        "rc": rc,
        "wall_s": round(wall, 1),
        **mon.peaks(),
        "error": None if rc == 0 else "\n".join(tail),
    }


def serve_step(cfg_args: list[str], work: Path, disk0: int, log: Path, env: dict, port: int) -> dict:
    """`bbjtune serve gguf` on the export, one chat request, then stop it: load time and answer latency."""
    argv = [sys.executable, "-m", "bbjtune", "serve", "gguf", *cfg_args, "--port", str(port)]
    print(f"[{time.strftime('%H:%M:%S')}] serve: {' '.join(argv)}", flush=True)
    t0 = time.time()
    out = open(log, "w", encoding="utf-8")
    proc = subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True
    )
    mon = Monitor(proc.pid, work, disk0)
    mon.start()
    base = f"http://127.0.0.1:{port}/v1"
    error, ready_s, answer_s, answer = None, None, None, None
    try:
        while time.time() - t0 < 900:
            if proc.poll() is not None:
                raise RuntimeError(f"the server stopped (rc {proc.returncode})")
            try:
                urllib.request.urlopen(f"{base}/models", timeout=5).read()
                ready_s = time.time() - t0
                break
            except OSError:
                time.sleep(1)
        else:
            raise RuntimeError("the server did not answer within 900 s")
        body = json.dumps(
            {
                "messages": [{"role": "user", "content": "Write a BBj program that prints hello."}],
                "max_tokens": 32,
                "temperature": 0,
            }
        ).encode()
        t1 = time.time()
        req = urllib.request.Request(
            f"{base}/chat/completions", body, headers={"Content-Type": "application/json"}
        )
        reply = json.loads(urllib.request.urlopen(req, timeout=600).read())
        answer_s = time.time() - t1
        answer = reply["choices"][0]["message"]["content"][:200]
    except Exception as exc:  # noqa: BLE001 — a rehearsal records what failed as its row
        error = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
        except ProcessLookupError:  # it had stopped by itself (its log says why)
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        mon.stop.set()
        out.close()
    return {
        "stage": "serve",
        "ok": error is None,
        "wall_s": round(time.time() - t0, 1),
        **mon.peaks(),
        "error": error,
        "metrics": {
            "ready_s": ready_s and round(ready_s, 1),
            "answer_s": answer_s and round(answer_s, 2),
            "answer": answer,
        },
    }


def stage_manifest(path: Path) -> dict:
    """A stage's manifest.json (train/export/eval: its `metrics` and its process's `peaks`); {} without one."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="7b", choices=["0.5b", "1.5b", "3b", "7b", "14b", "32b"])
    parser.add_argument("--work", type=Path, required=True, help="a directory on the disk the run may fill")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--data", type=Path, help="a prepared data directory to reuse (skips the data step)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per training stage")
    parser.add_argument("--gguf", nargs="+", default=["f16", "q8_0", "q4_k_m"])
    parser.add_argument(
        "--only", nargs="+", help="run only these steps (build data cpt sft export eval serve)"
    )
    parser.add_argument("--set", action="append", default=[], help="more config overrides")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--preset", help="default: qwen2.5-coder-<size>-base")
    parser.add_argument(
        "--cache",
        type=Path,
        help="where the random base is built (default: WORK/cache); e.g. a RAM disk when the disk cannot "
        "hold the 32B base beside the run (its bytes then do not count as disk)",
    )
    args = parser.parse_args()

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    cache = (args.cache or work / "cache").resolve()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BBJTUNE_CACHE_DIR": str(cache)}
    if not env.get("BBJTUNE_TOKENIZER_SOURCE"):  # found in the usual cache before the cache moves to `work`
        from bbjtune.errors import BbjtuneError
        from bbjtune.models.random_weights import tokenizer_source

        try:
            env["BBJTUNE_TOKENIZER_SOURCE"] = tokenizer_source()
        except BbjtuneError as exc:
            parser.error(str(exc))
    preset = args.preset or f"qwen2.5-coder-{args.size}-base"
    # the random weights of the preset's variant (an Instruct preset's generation config stops on <|im_end|>)
    source = f"random:qwen2.5-coder-{args.size}" + ("-instruct" if preset.endswith("-instruct") else "")
    data_dir = args.data.resolve() if args.data else work / "data"
    sets = [
        f"model.source={source}",
        f"output_dir={work}/runs/{{name}}",
        f"data.output_dir={data_dir}",
        "data.chatml=[examples/chatml/*.jsonl]",
        "data.sources=[]",
        "data.self_replay.enabled=false",
        f"train.cpt.max_steps={args.steps}",
        f"train.sft.max_steps={args.steps}",
        f"export.gguf=[{', '.join(args.gguf)}]",
        f"export.ollama.quant={'q4_k_m' if 'q4_k_m' in args.gguf else args.gguf[-1]}",
        "eval.limit=4",
        "eval.humaneval.limit=10",
        *args.set,
    ]
    cfg_args = [preset, *[a for s in sets for a in ("--set", s)]]
    cli = [sys.executable, "-m", "bbjtune"]
    steps = {
        "build": [
            sys.executable,
            "-c",
            "import sys; from bbjtune.models.loading import resolve_source; print(resolve_source(sys.argv[1]).path)",
            source,
        ],
        "data": [*cli, "data", "prepare", *cfg_args],
        "cpt": [*cli, "train", *cfg_args, "--stage", "cpt"],
        "sft": [*cli, "train", *cfg_args, "--stage", "sft"],
        "export": [*cli, "export", *cfg_args],
        "eval": [*cli, "eval", "run", *cfg_args],
    }
    wanted = args.only or [*steps, "serve"]
    if args.data and "data" in wanted and not args.only:
        wanted.remove("data")
    disk0 = tree_bytes(work)
    gpu = (
        subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if shutil.which("nvidia-smi")
        else "no GPU"
    )
    machine = f"{gpu}; {os.cpu_count()} CPU cores; {platform.machine()}"
    run_dir = work / "runs" / preset
    manifests = {
        "cpt": run_dir / "cpt" / "manifest.json",
        "sft": run_dir / "sft" / "manifest.json",
        "export": run_dir / "export" / "manifest.json",
        "eval": run_dir / "eval" / "tuned" / "manifest.json",
    }
    rows = []
    for name in wanted:
        log = work / f"log-{args.size}-{name}.txt"
        if name == "serve":
            row = serve_step(cfg_args, work, disk0, log, env, args.port)
        else:
            row = run_step(name, steps[name], work, disk0, log, env)
            manifest = stage_manifest(manifests[name]) if name in manifests else {}
            row["metrics"] = manifest.get("metrics")
            own = manifest.get("peaks")
            if own and own.get("peak_gpu_gib") is not None and row["peak_gpu_of"] != "process":
                row.update(peak_gpu_gib=own["peak_gpu_gib"], peak_gpu_of="torch")
            if name == "export" and row["rc"] == 2 and "GGUF verification failed" in (row["error"] or ""):
                # exit 2: a GGUF failed verification, files kept. Random weights give near-flat logits whose
                # top-1 choice any rounding flips, so that verdict says nothing here; the files are there
                row.update(ok=True, verification_failed=True)
        rows.append({"model": args.size, **row})
        save(args.json, args.size, rows, machine, work)  # after each step: a run cut short keeps its rows
        if not row["ok"] and name in ("build", "cpt", "sft", "export"):
            print(f"{name} failed; later steps need it:\n{row['error']}", flush=True)
            break
    print(json.dumps(rows, indent=2))


def save(path: Path, size: str, rows: list[dict], machine: str, work: Path) -> None:
    """Write this size's rows into `path`, keeping the other sizes' rows, atomically."""
    result = json.loads(path.read_text()) if path.exists() else {"rows": []}
    result.update(
        date=time.strftime("%Y-%m-%d"),
        machine=machine,
        command="python benchmarks/scale_rehearsal.py " + " ".join(sys.argv[1:]).replace(str(work), "WORK"),
    )
    result["rows"] = [r for r in result["rows"] if r.get("model") != size] + rows
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
