"""One large file over a link that caps each connection: parts vs one stream.

CDN edges and long paths limit a single TCP stream (40 MB/s is common), however
fast the link is. The bench CDN (``bench/servers.py``) paces every connection to
``--link-mb-s``; the Hub stand-in redirects the file there, as huggingface.co does.
The same file is then fetched, in alternating rounds, by:

* ``bundle build`` (``builder.build.build``, fresh store): parts over
  ``--connections`` connections (default 8), sha256 and fsync before the file is
  named;
* ``curl -L`` (one stream; no verification, no fsync);
* ``aria2c -x8 -s8`` (8 connections per file);
* ``hf_transfer.download(max_files=8)`` (the Rust downloader huggingface_hub can use),
  given the CDN URL the redirect leads to, as huggingface_hub gives it;
* ``snapshot_download`` (one stream), for reference.

Target (issue 16): ``bundle build`` >= 1.0x the faster of aria2c -x8 and hf_transfer
on a >= 200 MB file. Python contenders are timed inside their process around the
work; curl and aria2c around their process.

Examples::

    python -m bench.link --scale quick              # an 80 MB file at 40 MB/s per connection
    python -m bench.link --scale full --rounds 3    # 200 MB
    python -m bench.link --scale full --link-mb-s 25 --connections 16
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    MB,
    alternate,
    bench_parser,
    check_disk,
    cpu_seconds,
    emit_json,
    machine,
    make_hub_data,
    remove,
    run_json,
    scale_factor,
    scratch_dir,
    table,
    verdict,
)
from bench.servers import Servers

REPO = "bench/link-200m"
FULL_SIZE = 200 * MB
SCALES = {"quick": 0.4, "full": 1.0}  # quick: 80 MB, above the 64 MB default threshold
TARGET = 1.0


def _hub_env(hub_url: str) -> dict[str, str]:
    from bench.fetch import _hub_env as fetch_env

    return fetch_env(hub_url)


def _run_bundle(cfg: dict) -> dict:
    import huggingface_hub.file_download  # noqa: F401  (imports before the clock)
    import huggingface_hub.hf_api  # noqa: F401

    import builder.sources.hf  # noqa: F401
    from builder.build import build
    from builder.fetch import FetchPolicy

    work = Path(cfg["work"])
    spec = work / "spec.toml"
    spec.write_text('[bundle]\nname = "bench-link"\nversion = "1.0.0"\n\n[[artifact]]\n'
                    f'id = "weights"\nsource = "hf"\nrepo = "{cfg["repo"]}"\n'
                    'include = ["model.safetensors"]\n')
    started, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
    report = build(spec, out_dir=work / "out", store_dir=work / "store", progress=False,
                   policy=FetchPolicy(connections=cfg["connections"]))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu": cpu_seconds(resource.RUSAGE_SELF) - cpu,
            "bytes": report.fetched_bytes}


def _run_hf_transfer(cfg: dict) -> dict:
    import hf_transfer

    out = Path(cfg["work"]) / "model.safetensors"
    started, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
    hf_transfer.download(url=cfg["url"], filename=str(out), max_files=cfg["connections"],
                         chunk_size=10 * MB, parallel_failures=0, max_retries=0, headers=None)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu": cpu_seconds(resource.RUSAGE_SELF) - cpu,
            "bytes": out.stat().st_size}


def _run_snapshot(cfg: dict) -> dict:
    from huggingface_hub import snapshot_download

    cache = Path(cfg["work"]) / "hf-cache"
    started, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
    snapshot_download(cfg["repo"], cache_dir=cache, allow_patterns=["model.safetensors"])
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file() and "blobs" in p.parts)
    return {"seconds": seconds, "cpu": cpu_seconds(resource.RUSAGE_SELF) - cpu, "bytes": size}


CONTENDERS = {"bundle": _run_bundle, "hf_transfer": _run_hf_transfer, "snapshot": _run_snapshot}


def _tool(args: list[str], out: Path) -> tuple[float, float]:
    started, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu


def _cdn_url(url: str) -> str:
    """Where the Hub's resolve URL redirects (what huggingface_hub hands hf_transfer)."""
    proc = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{redirect_url}", url],
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip() or url


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("bench.link", __doc__)
    parser.add_argument("--scale", default="quick", help="quick (80 MB), full (200 MB), or a factor")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median taken)")
    parser.add_argument("--link-mb-s", type=float, default=40,
                        help="cap of each connection, MB/s (default 40: a CDN edge)")
    parser.add_argument("--connections", type=int, default=8,
                        help="bundle build --connections, aria2c -x, hf_transfer max_files")
    parser.add_argument("--data", type=Path, help="keep the served data here (reused across runs)")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        emit_json(CONTENDERS[args.run_one](json.loads(args.config)))
        return
    missing = [tool for tool in ("curl", "aria2c") if shutil.which(tool) is None]
    try:
        import hf_transfer  # noqa: F401
    except ImportError:
        missing.append("hf_transfer (pip install hf-transfer)")
    if missing:
        sys.exit(f"bench.link needs {', '.join(missing)} (Debian: apt-get install aria2 curl)")

    scale = scale_factor(args.scale, SCALES)
    size = int(FULL_SIZE * scale)
    data_dir = args.data or scratch_dir("link-data")
    check_disk(data_dir.parent, size * 3)
    make_hub_data(data_dir, {REPO: (size, 1)})
    print(f"link benchmark: one {size / MB:.0f} MB file, each connection capped at "
          f"{args.link_mb_s:g} MB/s ({machine()})", file=sys.stderr)
    c = args.connections
    try:
        with Servers(data_dir, link_mb_s=args.link_mb_s) as servers:
            env = _hub_env(servers.hub)
            url = f"{servers.hub}/{REPO}/resolve/{servers.commits[REPO]}/model.safetensors"
            cdn = _cdn_url(url)

            def python_contender(kind: str, **cfg: object):
                def run() -> tuple[float, float]:
                    work = scratch_dir(f"link-{kind}")
                    try:
                        config = {"work": str(work), "repo": REPO, "connections": c, **cfg}
                        result = run_json([sys.executable, "-m", "bench.link", "--run-one", kind,
                                           "--config", json.dumps(config)], env=env)
                        if result["bytes"] < size:
                            raise RuntimeError(f"{kind}: fetched {result['bytes']} of {size} bytes")
                        return result["seconds"], result["cpu"]
                    finally:
                        remove(work)
                return run

            def tool_contender(make_args):
                def run() -> tuple[float, float]:
                    work = scratch_dir("link-tool")
                    try:
                        out = work / "model.safetensors"
                        return _tool(make_args(work, out), out)
                    finally:
                        remove(work)
                return run

            names = {
                "bundle": f"bundle build --connections {c}",
                "aria2c": f"aria2c -x{c} -s{c}",
                "hf_transfer": f"hf_transfer (max_files={c})",
                "curl": "curl -L (one stream)",
                "snapshot": "snapshot_download (one stream)",
            }
            samples = alternate({
                names["bundle"]: python_contender("bundle"),
                names["aria2c"]: tool_contender(lambda work, out: [
                    "aria2c", f"-x{c}", f"-s{c}", "-k1M", "--file-allocation=none",
                    "--console-log-level=warn", "--summary-interval=0", "-d", str(work),
                    "-o", out.name, url]),
                names["hf_transfer"]: python_contender("hf_transfer", url=cdn),
                names["curl"]: tool_contender(lambda work, out: [
                    "curl", "-sS", "--fail", "-L", "-o", str(out), url]),
                names["snapshot"]: python_contender("snapshot"),
            }, args.rounds)
    finally:
        if args.data is None:
            remove(data_dir)

    med = {k: samples[v].median for k, v in names.items()}
    rate = {k: size / MB / s for k, s in med.items()}
    best_peer = max(rate["aria2c"], rate["hf_transfer"])
    ratio = rate["bundle"] / best_peer
    result = {"benchmark": "link", "scale": scale, "bytes": size, "link_mb_s": args.link_mb_s,
              "connections": c, "rounds": args.rounds, "machine": machine(),
              "median_seconds": med, "mb_per_s": rate,
              "ratios": {"bundle_vs_best_parallel_peer": ratio,
                         "bundle_vs_curl": rate["bundle"] / rate["curl"]},
              "samples": {k: samples[v].seconds for k, v in names.items()}}
    if args.json:
        emit_json(result)
        return
    print(f"\none {size / MB:.0f} MB file, each connection capped at {args.link_mb_s:g} MB/s; "
          f"median of {args.rounds} alternating rounds; {machine()}\n")
    print(table(["contender", "median s", "MB/s", "bundle ratio"], [
        [names[k], f"{med[k]:.2f}", f"{rate[k]:.0f}",
         "-" if k == "bundle" else f"{rate['bundle'] / rate[k]:.2f}x"] for k in names]))
    print()
    print(table(["measure", "ratio", "target", ""], [
        ["bundle vs the faster of aria2c and hf_transfer", f"{ratio:.2f}x", f">= {TARGET}x",
         verdict(ratio, TARGET, higher_is_better=True)],
    ]))


if __name__ == "__main__":
    main()
