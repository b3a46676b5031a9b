"""One large file over a link that caps each connection: parts vs one stream.

CDN edges and long paths limit a single TCP stream (40 MB/s is common), however
fast the link is. The bench CDN (``bench/servers.py``) paces every connection to
``--link-mb-s``; the Hub stand-in redirects the file there, as huggingface.co does.
A file of the same size is then fetched, in alternating rounds, by:

* ``bundle build`` (``builder.pipeline.build``, fresh store), once per ``--source``:
  ``hf`` (a Hub repo: the size comes from the Hub's file list), ``url`` (a url
  artifact with ``sha256`` and no ``size``, as every one in bundles/ddrm.toml) and
  ``torchvision`` (``ViT_B_16_Weights.IMAGENET1K_V1`` with its sha256 pinned, the
  weights URL sent to the CDN with ``--mirror``); parts over ``--connections``
  connections (default 8), sha256 and fsync before the file is named;
* ``curl -L`` (one stream; no verification, no fsync);
* ``aria2c -x8 -s8`` (8 connections per file);
* ``hf_transfer.download(max_files=8)`` (the Rust downloader huggingface_hub can use),
  given the CDN URL the redirect leads to, as huggingface_hub gives it;
* ``snapshot_download`` (one stream), for reference.

The peers fetch the url source's file from the CDN URL directly (aria2c, curl,
hf_transfer) and the Hub file (snapshot_download).

Targets (issue 31): every source's ``bundle build`` >= 1.0x the faster of aria2c -x8
and hf_transfer on a >= 200 MB file, and >= 0.9x the link limit (connections x cap).
Python contenders are timed inside their process around the work; curl and aria2c
around their process.

Examples::

    python -m bench.link --scale quick              # an 80 MB file at 40 MB/s per connection
    python -m bench.link --scale full --rounds 3    # 200 MB, the three sources
    python -m bench.link --scale full --source url --link-mb-s 25 --connections 16
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
URL_FILE = "link-200m.bin"
#: the file torchvision names ViT_B_16_Weights.IMAGENET1K_V1 (here random bytes, sha256 pinned)
TV_WEIGHTS, TV_FILE = "ViT_B_16_Weights.IMAGENET1K_V1", "vit_b_16-c867db91.pth"
TV_PREFIX = "https://download.pytorch.org/models/"
SOURCES = ("hf", "url", "torchvision")
FULL_SIZE = 200 * MB
SCALES = {"quick": 0.4, "full": 1.0}  # quick: 80 MB, above the 64 MB default threshold
TARGET = 1.0
LINK_TARGET = 0.9


def _hub_env(hub_url: str) -> dict[str, str]:
    from bench.fetch import _hub_env as fetch_env

    return fetch_env(hub_url)


def _spec(cfg: dict) -> str:
    """The spec of one source's artifact (the same size of file for each)."""
    head = '[bundle]\nname = "bench-link"\nversion = "1.0.0"\n\n[[artifact]]\nid = "weights"\n'
    if cfg["source"] == "hf":
        return head + f'source = "hf"\nrepo = "{cfg["repo"]}"\ninclude = ["model.safetensors"]\n'
    if cfg["source"] == "url":
        return head + f'source = "url"\nurl = "{cfg["url"]}"\nsha256 = "{cfg["sha256"]}"\n'
    return head + f'source = "torchvision"\nweights = "{TV_WEIGHTS}"\nsha256 = "{cfg["tv_sha256"]}"\n'


def _run_bundle(cfg: dict) -> dict:
    import huggingface_hub.file_download  # noqa: F401  (imports before the clock)
    import huggingface_hub.hf_api  # noqa: F401

    import builder.sources.hf  # noqa: F401
    from builder.fetch import FetchPolicy
    from builder.pipeline import build

    if cfg["source"] == "torchvision":
        import torchvision.models  # noqa: F401  (its import is not the download)
    work = Path(cfg["work"])
    spec = work / "spec.toml"
    spec.write_text(_spec(cfg))
    mirrors = [(TV_PREFIX, cfg["cdn"] + "/files/")] if cfg["source"] == "torchvision" else []
    started, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
    report = build(spec, out_dir=work / "out", store_dir=work / "store", progress=False,
                   mirrors=mirrors, policy=FetchPolicy(connections=cfg["connections"]))
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


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("bench.link", __doc__)
    parser.add_argument("--scale", default="quick", help="quick (80 MB), full (200 MB), or a factor")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median taken)")
    parser.add_argument("--link-mb-s", type=float, default=40,
                        help="cap of each connection, MB/s (default 40: a CDN edge)")
    parser.add_argument("--connections", type=int, default=8,
                        help="bundle build --connections, aria2c -x, hf_transfer max_files")
    parser.add_argument("--source", choices=[*SOURCES, "all"], default="all",
                        help="which artifact source bundle build fetches (default: all three, "
                             "side by side in one run)")
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
    make_hub_data(data_dir, {REPO: (size, 1)}, files={URL_FILE: size, TV_FILE: size})
    digests = json.loads((data_dir / "digests.json").read_text())["files"]
    sources = SOURCES if args.source == "all" else (args.source,)
    print(f"link benchmark: one {size / MB:.0f} MB file, each connection capped at "
          f"{args.link_mb_s:g} MB/s ({machine()})", file=sys.stderr)
    c = args.connections
    try:
        with Servers(data_dir, link_mb_s=args.link_mb_s) as servers:
            env = _hub_env(servers.hub)
            url = f"{servers.cdn}/files/{URL_FILE}"  # what the peers fetch, and the url source

            def python_contender(kind: str, **cfg: object):
                def run() -> tuple[float, float]:
                    work = scratch_dir(f"link-{kind}")
                    try:
                        config = {"work": str(work), "repo": REPO, "connections": c,
                                  "url": url, "cdn": servers.cdn, "sha256": digests[URL_FILE],
                                  "tv_sha256": digests[TV_FILE], **cfg}
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
                **{f"bundle:{src}": f"bundle build --connections {c}, source {src}" for src in sources},
                "aria2c": f"aria2c -x{c} -s{c}",
                "hf_transfer": f"hf_transfer (max_files={c})",
                "curl": "curl -L (one stream)",
                "snapshot": "snapshot_download (one stream)",
            }
            samples = alternate({
                **{names[f"bundle:{src}"]: python_contender("bundle", source=src) for src in sources},
                names["aria2c"]: tool_contender(lambda work, out: [
                    "aria2c", f"-x{c}", f"-s{c}", "-k1M", "--file-allocation=none",
                    "--console-log-level=warn", "--summary-interval=0", "-d", str(work),
                    "-o", out.name, url]),
                names["hf_transfer"]: python_contender("hf_transfer"),
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
    limit = c * args.link_mb_s * 1e6 / MB  # every connection at its cap
    ratios = {src: {"vs_best_parallel_peer": rate[f"bundle:{src}"] / best_peer,
                    "vs_link_limit": rate[f"bundle:{src}"] / limit,
                    "vs_curl": rate[f"bundle:{src}"] / rate["curl"]} for src in sources}
    result = {"benchmark": "link", "scale": scale, "bytes": size, "link_mb_s": args.link_mb_s,
              "connections": c, "rounds": args.rounds, "machine": machine(),
              "median_seconds": med, "mb_per_s": rate, "link_limit_mb_s": limit, "ratios": ratios,
              "samples": {k: samples[v].seconds for k, v in names.items()}}
    if args.json:
        emit_json(result)
        return
    print(f"\none {size / MB:.0f} MB file, each connection capped at {args.link_mb_s:g} MB/s "
          f"(link limit {limit:.0f} MB/s with {c}); median of {args.rounds} alternating rounds; "
          f"{machine()}\n")
    print(table(["contender", "median s", "MB/s"], [
        [names[k], f"{med[k]:.2f}", f"{rate[k]:.0f}"] for k in names]))
    print()
    rows = []
    for src in sources:
        r = ratios[src]
        rows.append([f"{src}: bundle vs the faster of aria2c and hf_transfer",
                     f"{r['vs_best_parallel_peer']:.2f}x", f">= {TARGET}x",
                     verdict(r["vs_best_parallel_peer"], TARGET, higher_is_better=True)])
        rows.append([f"{src}: bundle vs the link limit", f"{r['vs_link_limit']:.2f}x",
                     f">= {LINK_TARGET}x", verdict(r["vs_link_limit"], LINK_TARGET, higher_is_better=True)])
    print(table(["measure", "ratio", "target", ""], rows))


if __name__ == "__main__":
    main()
