"""``bundle verify`` (full sha256 of every file) vs ``sha256sum`` on the same files.

A bundle folder with a realistic mix (three large weights files and 200 small
JSON files, hub layout) and its bundle.json. The page cache is warmed first (each
contender runs once untimed), so disk speed is not what is measured; then the
contenders alternate:

* ``bundle verify DIR`` (the CLI, a fresh process: what users run; its
  ``verify_bundle()`` time is shown too);
* ``runtime.activate(verify="full")`` in a fresh process, timed around the call:
  what a notebook pays for hashing every file before anything loads (compare
  with ``activate()``'s quick check, also timed);
* ``sha256sum`` of every file, one process (sequential);
* ``xargs -P JOBS sha256sum`` (parallel, as ``bundle verify`` hashes a few files at once);
* ``openssl dgst -sha256`` of every file, one process: coreutils' ``sha256sum``
  (Debian 12) does not use the CPU's SHA instructions, OpenSSL (and therefore
  Python's ``hashlib``) does, so this is the hardware limit.

Target: ``bundle verify`` throughput >= 0.8x ``sha256sum``.

Examples::

    python -m bench.verify --scale quick        # ~100 MB, < 1 minute
    python -m bench.verify --scale full         # ~1 GB
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    MB,
    alternate,
    bench_parser,
    check_disk,
    child_env,
    emit_json,
    json_file,
    machine,
    random_file,
    remove,
    run_json,
    scale_factor,
    scratch_dir,
    table,
    verdict,
)

SCALES = {"quick": 0.1, "full": 1.0}
LARGE = {"model.safetensors": 600 * MB, "pytorch_model.bin": 300 * MB, "head.pth": 100 * MB}
SMALL_FILES = 200
TARGET = 0.8

_VERIFY_CODE = """
import json, sys, time
from builder.verify import verify_bundle
t = time.perf_counter()
report = verify_bundle(sys.argv[1])
assert report.ok, report.lines()
print(json.dumps({"seconds": time.perf_counter() - t, "bytes": report.checked_bytes}))
"""

_ACTIVATE_CODE = """
import json, os, sys, time
os.environ.update(BUNDLE_PATH=sys.argv[1], OFFLINE_BUNDLE_SEARCH_ROOTS="")
import runtime
t = time.perf_counter()
act = runtime.activate(verify=sys.argv[2])
assert act.ok and act.verified == sys.argv[2], act
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def make_bundle(root: Path, scale: float) -> list[Path]:
    """A bundle folder with bundle.json; returns its listed files."""
    from runtime.manifest import ArtifactEntry, FileEntry, Manifest, write_manifest

    commit = "0" * 40
    snap = f"hf/models--bench--verify/snapshots/{commit}"
    entries = []
    for i, (name, size) in enumerate(LARGE.items()):
        rel = f"{snap}/{name}"
        sha = random_file(root / rel, int(size * scale), seed=900 + i)
        entries.append(FileEntry(rel, (root / rel).stat().st_size, sha))
    for j in range(SMALL_FILES):
        rel = f"{snap}/extra/part-{j:03d}.json"
        json_file(root / rel, seed=j)
        data = (root / rel).read_bytes()
        entries.append(FileEntry(rel, len(data), hashlib.sha256(data).hexdigest()))
    art = ArtifactEntry("verify", "hf", "bench/verify", commit, snap, entries)
    write_manifest(root, Manifest(name="bench-verify", version="1.0.0", artifacts=[art],
                                  created="2026-01-01T00:00:00Z"))
    return [root / e.path for e in entries]


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("bench.verify", __doc__)
    parser.add_argument("--scale", default="quick", help="quick (~100 MB), full (~1 GB), or a factor")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median taken)")
    parser.add_argument("--jobs", type=int, default=4, help="xargs -P for parallel sha256sum")
    args = parser.parse_args(argv)
    scale = scale_factor(args.scale, SCALES)

    work = scratch_dir("verify")
    check_disk(work.parent, int(sum(LARGE.values()) * scale * 1.2))
    try:
        bundle = work / "bench-verify"
        files = make_bundle(bundle, scale)
        n_bytes = sum(p.stat().st_size for p in files)
        print(f"verify benchmark: {len(files)} files, {n_bytes / MB:.0f} MB ({machine()})",
              file=sys.stderr)
        listing = work / "files.txt"
        listing.write_text("\0".join(str(p) for p in files))
        inproc: list[float] = []

        def bundle_verify() -> float:
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "builder", "verify", str(bundle)],
                                  env=child_env(), capture_output=True, text=True)
            seconds = time.perf_counter() - t
            if proc.returncode != 0:
                raise RuntimeError(f"bundle verify failed: {proc.stdout}{proc.stderr}")
            return seconds

        def verify_inproc() -> float:
            result = run_json([sys.executable, "-c", _VERIFY_CODE, str(bundle)])
            inproc.append(result["seconds"])
            return result["seconds"]

        def activate(mode: str):
            def run() -> float:
                return run_json([sys.executable, "-c", _ACTIVATE_CODE, str(bundle), mode])["seconds"]
            return run

        def sha256sum(parallel: int, tool: tuple[str, ...] = ("sha256sum",)):
            def run() -> float:
                cmd = ["xargs", "-0", "-n", "16", "-P", str(parallel), *tool]
                if parallel == 1:
                    cmd = ["xargs", "-0", *tool]  # one process, files in turn
                t = time.perf_counter()
                with open(listing, "rb") as stdin:
                    subprocess.run(cmd, stdin=stdin, check=True, stdout=subprocess.DEVNULL)
                return time.perf_counter() - t
            return run

        names = {
            "cli": "bundle verify (CLI process)",
            "inproc": "verify_bundle() (in-process time)",
            "full": 'runtime.activate(verify="full") (call time)',
            "quick": "runtime.activate() quick check (call time)",
            "seq": "sha256sum (one process)",
            "par": f"xargs -P {args.jobs} sha256sum",
            "openssl": "openssl dgst -sha256 (one process)",
        }
        contenders = {
            names["cli"]: bundle_verify,
            names["inproc"]: verify_inproc,
            names["full"]: activate("full"),
            names["quick"]: activate("quick"),
            names["seq"]: sha256sum(1),
            names["par"]: sha256sum(args.jobs),
            names["openssl"]: sha256sum(1, ("openssl", "dgst", "-sha256")),
        }
        for fn in contenders.values():  # warm the page cache for everyone
            fn()
        inproc.clear()
        samples = alternate(contenders, args.rounds)
    finally:
        remove(work)

    med = {k: samples[v].median for k, v in names.items()}
    rate = {k: n_bytes / MB / s for k, s in med.items()}
    ratios = {
        "cli_vs_sha256sum": rate["cli"] / rate["seq"],
        "inproc_vs_sha256sum": rate["inproc"] / rate["seq"],
        "cli_vs_parallel_sha256sum": rate["cli"] / rate["par"],
        "inproc_vs_openssl": rate["inproc"] / rate["openssl"],
        "activate_full_vs_sha256sum": rate["full"] / rate["seq"],
    }
    result = {"benchmark": "verify", "scale": scale, "files": len(files), "bytes": n_bytes,
              "machine": machine(), "median_seconds": med, "mb_per_s": rate, "ratios": ratios,
              "samples": {k: samples[v].seconds for k, v in names.items()}}
    if args.json:
        emit_json(result)
        return
    print(f"\n{len(files)} files, {n_bytes / MB:.0f} MB, warm page cache; median of "
          f"{args.rounds} alternating rounds; {machine()}\n")
    print(table(["contender", "median s", "MB/s", "ratio to sha256sum"], [
        [names[k], f"{med[k]:.3f}", f"{rate[k]:.0f}", f"{rate[k] / rate['seq']:.2f}x"]
        for k in names
    ]))
    print()
    print(table(["measure", "ratio", "target", ""], [
        ["bundle verify (whole CLI process) vs sha256sum", f"{ratios['cli_vs_sha256sum']:.2f}x",
         f">= {TARGET}x", verdict(ratios["cli_vs_sha256sum"], TARGET, higher_is_better=True)],
        ["verify_bundle() vs sha256sum", f"{ratios['inproc_vs_sha256sum']:.2f}x",
         f">= {TARGET}x", verdict(ratios["inproc_vs_sha256sum"], TARGET, higher_is_better=True)],
        ['activate(verify="full") vs sha256sum', f"{ratios['activate_full_vs_sha256sum']:.2f}x",
         f">= {TARGET}x",
         verdict(ratios["activate_full_vs_sha256sum"], TARGET, higher_is_better=True)],
        ["verify_bundle() vs openssl (hardware SHA, for information)",
         f"{ratios['inproc_vs_openssl']:.2f}x", "-", "-"],
    ]))


if __name__ == "__main__":
    main()
