"""Shared helpers of the benchmarks: synthetic data, subprocess contenders, tables.

Every benchmark runs its contenders alternately (A, B, C, A, B, C, ...) and
reports medians, so that load from other work on the machine hits all of them
alike.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000
_BLOCK = 16 << 20


def random_file(path: Path, size: int, seed: int) -> str:
    """Write ``size`` incompressible bytes (fast: one random block, a counter per block).

    Returns:
        The sha256 of the file.
    """
    block = bytearray(random.Random(seed).randbytes(min(size, _BLOCK)))
    h = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb", buffering=0) as f:
        written, n = 0, 0
        while written < size:
            block[:16] = hashlib.md5(f"{seed}:{n}".encode()).digest()
            chunk = memoryview(block)[: min(len(block), size - written)]
            f.write(chunk)
            h.update(chunk)
            written += len(chunk)
            n += 1
    return h.hexdigest()


def json_file(path: Path, seed: int, size: int = 3000) -> None:
    """A small JSON file (config / tokenizer-like), different per seed."""
    rng = random.Random(seed)
    items, text = {}, "{}"
    while len(text) < size:
        items[f"key_{len(items)}_{rng.randrange(10**6)}"] = [rng.random() for _ in range(4)]
        text = json.dumps(items, indent=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_hub_data(
    data_dir: Path,
    repos: dict[str, tuple[int, int]],
    files: dict[str, int] | None = None,
) -> tuple[int, int]:
    """Write what ``bench.servers`` serves (reused when ``data_dir`` already holds it).

    Args:
        data_dir: folder to fill.
        repos: repo id -> (bytes of its ``model.safetensors``, 0 for none; number of
            small JSON files: ``config.json`` and ``extra/part-NNN.json``).
        files: plain files for url artifacts: name -> bytes.

    Returns:
        (number of files, total bytes).
    """
    files = files or {}
    stamp = data_dir / "params.json"
    params = {"repos": repos, "files": files, "v": 3}
    if not (stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(params))):
        remove(data_dir)
        digests: dict[str, dict[str, str]] = {"files": {}}
        for i, (repo_id, (size, n_small)) in enumerate(repos.items()):
            folder = data_dir / "hub" / repo_id.replace("/", "--")
            folder.mkdir(parents=True)
            digests[folder.name] = {}
            if size:
                digests[folder.name]["model.safetensors"] = random_file(
                    folder / "model.safetensors", size, seed=i
                )
            for j in range(n_small):
                name = "config.json" if j == 0 else f"extra/part-{j:03d}.json"
                json_file(folder / name, seed=1000 * i + j, size=1000 + (j * 977) % 7000)
        for k, (name, size) in enumerate(files.items()):
            digests["files"][name] = random_file(data_dir / "files" / name, size, seed=500 + k)
        (data_dir / "files").mkdir(parents=True, exist_ok=True)
        (data_dir / "digests.json").write_text(json.dumps(digests))
        stamp.write_text(json.dumps(params))
    served = [p for sub in ("hub", "files") for p in (data_dir / sub).rglob("*") if p.is_file()]
    return len(served), sum(p.stat().st_size for p in served)


def scratch_dir(prefix: str) -> Path:
    """A fresh folder under $BENCH_TMP (default: the system temp dir)."""
    base = os.environ.get("BENCH_TMP") or None
    return Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-", dir=base))


def remove(path: Path) -> None:
    """rmtree that copes with read-only files and folders (store blobs are 0444)."""
    if not path.exists():
        return
    for dirpath, _dirs, _files in os.walk(path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(path, ignore_errors=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check_disk(path: Path, needed: int) -> None:
    """Exit with a clear message when ``path``'s file system lacks ``needed`` bytes."""
    free = free_bytes(path)
    if free < needed * 1.2:
        sys.exit(
            f"not enough disk under {path}: {free / 1e9:.1f} GB free, this run needs about "
            f"{needed / 1e9:.1f} GB; set BENCH_TMP to a roomier folder or use a smaller --scale"
        )


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a contender process.

    Python processes get cached bytecode, as in any pip install (this machine
    sets PYTHONDONTWRITEBYTECODE=1, which would make every process compile the
    project's modules again: ~0.4 s of a 1 s CLI run). The cache goes to a
    folder outside the working tree.
    """
    full_env = dict(os.environ)
    full_env.pop("PYTHONDONTWRITEBYTECODE", None)
    full_env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "bench-pycache")
    full_env.update(env or {})
    return full_env


def run_json(args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 3600) -> dict:
    """Run ``python -m ...`` (or any command) printing JSON last on stdout; return it."""
    full_env = child_env(env)
    proc = subprocess.run(
        list(args), cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:4])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    out = proc.stdout.strip()
    try:
        return json.loads(out)  # the whole output (e.g. `bundle build --json`, indented)
    except ValueError:
        return json.loads(out.splitlines()[-1])  # a JSON line after other output


@dataclass
class Samples:
    """Measurements of one contender across rounds."""

    name: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user+sys seconds, when measured

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_cpu(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None


def alternate(
    contenders: dict[str, Callable[[], float | tuple[float, float]]], rounds: int
) -> dict[str, Samples]:
    """Run each contender once per round, in turn; returns the samples by name.

    A contender returns its wall seconds, or ``(wall seconds, cpu seconds)``.
    """
    out = {name: Samples(name) for name in contenders}
    for r in range(rounds):
        for name, fn in contenders.items():
            result = fn()
            seconds, cpu = result if isinstance(result, tuple) else (result, None)
            out[name].seconds.append(seconds)
            if cpu is not None:
                out[name].cpu.append(cpu)
            shown = f"{seconds:8.3f} s" + (f"  cpu {cpu:7.3f} s" if cpu is not None else "")
            print(f"  round {r + 1}/{rounds}  {name:<42} {shown}", file=sys.stderr)
    return out


def cpu_seconds(who: int) -> float:
    """user+sys seconds of this process (RUSAGE_SELF) or its waited-for children."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table (also readable in a terminal)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def verdict(value: float, target: float, *, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "meets" if ok else "MISSES"


def machine() -> str:
    """One line about where this ran (cores, load) for the results."""
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return f"{os.cpu_count()} cores, load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"


def emit_json(obj: Any) -> None:
    print(json.dumps(obj), flush=True)


def bench_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The argument parser every bench script starts from (with ``--json``)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}", description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser


def scale_factor(value: str, scales: dict[str, float]) -> float:
    """``--scale``: a named scale (quick, full) or a plain factor."""
    return scales[value] if value in scales else float(value)
