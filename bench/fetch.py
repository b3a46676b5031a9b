"""Fetch throughput: ``bundle build`` vs ``snapshot_download`` in a loop vs ``curl``.

A Hub stand-in serves several repos (a few large ``model.safetensors`` files and
many small JSON files); large files are redirected to a sendfile "CDN" as on
huggingface.co (see ``bench/servers.py``). The same files are then fetched,
in alternating rounds, by:

* ``bundle build`` (``builder.pipeline.build``, fresh store, ``--jobs`` parallel
  downloads, sha256 / git-id verification, fsync, hard-linked bundle);
* ``huggingface_hub.snapshot_download`` called once per repo in a loop, as a
  notebook does it, with its own ``max_workers`` default (8), fresh cache;
* ``curl`` of the very same URLs (following the same redirects), one process,
  sequential and ``--parallel`` with ``--jobs`` transfers: the practical limit
  (no verification, no fsync);
* the same ``curl --parallel`` followed by ``sync FILE...`` (an fsync per file):
  the limit for a download that, like ``bundle build``, is on disk when it ends.

Timing: the Python contenders are timed inside their process around the work
(interpreter start and imports excluded); curl is timed around its process.

Examples::

    python -m bench.fetch --scale quick          # ~40 MB, < 1 minute
    python -m bench.fetch --scale full           # 1 GB + 400 MB + 200 MB + 240 small files
    python -m bench.fetch --scale 0.2 --rounds 5 --json
    python -m bench.fetch --scale 0.25 --link-mb-s 50    # each download capped like a real link
    python -m bench.fetch --workload small --latency-ms 20   # small files from a distant server
"""

from __future__ import annotations

import argparse
import json
import resource
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
from bench.servers import REPO_ID_SEP, Servers

#: repo id -> size of its model.safetensors at full scale (bytes); plus SMALL_FILES json each
REPOS = {
    "bench/llm-1g": 1000 * MB,
    "bench/vit-400m": 400 * MB,
    "bench/audio-200m": 200 * MB,
    "bench/tokenizers": 0,
}
SMALL_FILES = {"bench/tokenizers": 120}
SMALL_FILES_DEFAULT = 40
SCALES = {"quick": 0.03, "full": 1.0}
TARGET_VS_SNAPSHOT = 1.5
TARGET_VS_CURL = 0.8


WORKLOADS = ("mix", "large", "small")


def workload_repos(workload: str) -> dict[str, int]:
    """REPOS, or for ``large`` the repos with weights only, for ``small`` the JSON-only repo."""
    if workload == "large":
        return {r: s for r, s in REPOS.items() if s}
    if workload == "small":
        return {r: s for r, s in REPOS.items() if not s}
    return dict(REPOS)


def make_data(data_dir: Path, scale: float, workload: str = "mix") -> tuple[int, int]:
    """The repos of ``workload`` at ``scale`` under ``data_dir`` (reused when already there).

    ``large``: the weights files with one config.json each (per-byte costs);
    ``small``: the repo of small JSON files alone (per-file costs); ``mix``: both.
    """
    def small_files(repo: str) -> int:
        return 1 if workload == "large" else SMALL_FILES.get(repo, SMALL_FILES_DEFAULT)

    return make_hub_data(data_dir, {
        repo: (max(1, int(size * scale)) if size else 0, small_files(repo))
        for repo, size in workload_repos(workload).items()
    })


def _files(data_dir: Path) -> list[tuple[str, str]]:
    """(repo_id, path in repo) of every file served."""
    out = []
    for folder in sorted((data_dir / "hub").iterdir()):
        repo_id = folder.name.replace(REPO_ID_SEP, "/", 1)
        out += [
            (repo_id, p.relative_to(folder).as_posix())
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        ]
    return out


def _spec_text(repos: list[str]) -> str:
    lines = [
        "[bundle]",
        'name = "bench-fetch"',
        'version = "1.0.0"',
        'title = "Fetch benchmark bundle"',
        "",
    ]
    for i, repo in enumerate(repos):
        lines += ["[[artifact]]", f'id = "repo-{i}"', 'source = "hf"', f'repo = "{repo}"', ""]
    return "\n".join(lines)


def _hub_env(hub_url: str) -> dict[str, str]:
    return {
        "HF_ENDPOINT": hub_url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_TOKEN": "",
    }


# --- contenders, each run in a fresh process (``--run-one``) -------------------


def _run_bundle(cfg: dict) -> dict:
    # What the build imports on the way, imported before the clock starts (as
    # snapshot_download's imports are): the benchmark times fetching, not imports.
    import huggingface_hub.file_download  # noqa: F401  (hf_hub_url; snapshot_download's own module imports it too)
    import huggingface_hub.hf_api  # noqa: F401
    import requests  # noqa: F401

    import builder.sources.hf  # noqa: F401
    from builder.pipeline import build

    work = Path(cfg["work"])
    spec = work / "spec.toml"
    spec.write_text(_spec_text(cfg["repos"]))
    started, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
    report = build(
        spec, out_dir=work / "out", store_dir=work / "store", jobs=cfg["jobs"], progress=False
    )
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(resource.RUSAGE_SELF) - cpu
    return {"seconds": seconds, "cpu": cpu, "bytes": report.fetched_bytes, "files": report.files}


def _run_snapshot(cfg: dict) -> dict:
    from huggingface_hub import snapshot_download

    cache = Path(cfg["work"]) / "hf-cache"
    kwargs = {} if cfg.get("max_workers") is None else {"max_workers": cfg["max_workers"]}
    started, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
    for repo in cfg["repos"]:
        snapshot_download(repo, cache_dir=cache, **kwargs)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(resource.RUSAGE_SELF) - cpu
    size = sum(p.stat().st_size for p in (cache).rglob("*") if p.is_file() and "blobs" in p.parts)
    return {"seconds": seconds, "cpu": cpu, "bytes": size}


CONTENDERS = {"bundle": _run_bundle, "snapshot": _run_snapshot}


def _curl(
    files: list[tuple[str, str]], servers: Servers, work: Path, parallel: int,
    durable: bool = False,
) -> tuple[float, float]:
    config = work / "curl.cfg"
    with open(config, "w") as f:
        for repo, rel in files:
            url = f"{servers.hub}/{repo}/resolve/{servers.commits[repo]}/{rel}"
            f.write(f'url = "{url}"\noutput = "{work}/out/{repo}/{rel}"\n')
    args = ["curl", "-sS", "--fail", "-L", "--create-dirs", "-K", str(config)]
    if parallel > 1:
        args[1:1] = ["--parallel", "--parallel-max", str(parallel)]
    started, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(args, capture_output=True, text=True)  # --parallel ignores -s
    if durable and proc.returncode == 0:
        # coreutils `sync FILE...` fsyncs each file: what `bundle build` does before it
        # names a blob. curl alone leaves the bytes in the page cache.
        outputs = [str(work / "out" / repo / rel) for repo, rel in files]
        subprocess.run(["sync", "--", *outputs], check=True)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"curl failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, cpu


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("bench.fetch", __doc__)
    parser.add_argument("--scale", default="quick",
                        help="quick (3%% of full sizes), full, or a factor of the full sizes")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median taken)")
    parser.add_argument("--jobs", type=int, default=4, help="bundle build --jobs and curl --parallel-max")
    parser.add_argument("--workload", choices=WORKLOADS, default="mix",
                        help="mix (default): large and small files; large: weights only "
                             "(per-byte costs); small: JSON files only (per-file costs)")
    parser.add_argument("--link-mb-s", type=float, default=0,
                        help="cap each CDN connection at this many MB/s, like a real link "
                             "(default 0: loopback speed, which measures CPU)")
    parser.add_argument("--latency-ms", type=float, default=0,
                        help="emulate a distant server: every request (and new connection) "
                             "waits this long, like a round trip (default 0: loopback's)")
    parser.add_argument("--data", type=Path, help="keep the served data here (reused across runs)")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        emit_json(CONTENDERS[args.run_one](json.loads(args.config)))
        return

    scale = scale_factor(args.scale, SCALES)
    data_dir = args.data or scratch_dir("fetch-data")
    repos = list(workload_repos(args.workload))
    full_bytes = sum(workload_repos(args.workload).values()) * scale
    check_disk(data_dir.parent, int(full_bytes * 2.2))
    n_files, n_bytes = make_data(data_dir, scale, args.workload)
    print(f"fetch benchmark: {len(repos)} repos, {n_files} files, {n_bytes / MB:.0f} MB "
          f"({machine()})", file=sys.stderr)
    files = _files(data_dir)
    try:
        with Servers(data_dir, link_mb_s=args.link_mb_s, latency_ms=args.latency_ms) as servers:
            env = _hub_env(servers.hub)

            def python_contender(kind: str, **cfg: object):
                def run() -> float:
                    work = scratch_dir(f"fetch-{kind}")
                    try:
                        config = {"work": str(work), "repos": repos, **cfg}
                        result = run_json(
                            [sys.executable, "-m", "bench.fetch", "--run-one", kind,
                             "--config", json.dumps(config)], env=env,
                        )
                        if result["bytes"] < n_bytes * 0.99:
                            raise RuntimeError(f"{kind}: fetched {result['bytes']} of {n_bytes} bytes")
                        return result["seconds"], result["cpu"]
                    finally:
                        remove(work)
                return run

            def curl_contender(parallel: int, durable: bool = False):
                def run() -> float:
                    work = scratch_dir("fetch-curl")
                    try:
                        return _curl(files, servers, work, parallel, durable)
                    finally:
                        remove(work)
                return run

            names = {
                "bundle": f"bundle build --jobs {args.jobs}",
                "snapshot": "snapshot_download loop (max_workers=8)",
                "curl_seq": "curl, sequential",
                "curl_par": f"curl --parallel-max {args.jobs}",
                "curl_sync": f"curl --parallel-max {args.jobs}, then fsync (sync FILE...)",
            }
            samples = alternate({
                names["bundle"]: python_contender("bundle", jobs=args.jobs),
                names["snapshot"]: python_contender("snapshot", max_workers=None),
                names["curl_seq"]: curl_contender(1),
                names["curl_par"]: curl_contender(args.jobs),
                names["curl_sync"]: curl_contender(args.jobs, durable=True),
            }, args.rounds)
    finally:
        if args.data is None:
            remove(data_dir)

    med = {k: samples[v].median for k, v in names.items()}
    cpu_per_gb = {k: samples[v].median_cpu / (n_bytes / 1e9) for k, v in names.items()}
    rate = {k: n_bytes / MB / s for k, s in med.items()}
    curl_best = max(rate["curl_seq"], rate["curl_par"])
    ratios = {
        "bundle_vs_snapshot": rate["bundle"] / rate["snapshot"],
        "bundle_vs_curl_best": rate["bundle"] / curl_best,
        "bundle_vs_curl_seq": rate["bundle"] / rate["curl_seq"],
        "bundle_vs_curl_par": rate["bundle"] / rate["curl_par"],
        "bundle_vs_curl_durable": rate["bundle"] / rate["curl_sync"],
    }
    result = {
        "benchmark": "fetch", "workload": args.workload, "link_mb_s": args.link_mb_s,
        "latency_ms": args.latency_ms,
        "scale": scale, "files": n_files,
        "bytes": n_bytes,
        "rounds": args.rounds, "machine": machine(),
        "median_seconds": med, "mb_per_s": rate, "ratios": ratios, "cpu_s_per_gb": cpu_per_gb,
        "samples": {k: samples[v].seconds for k, v in names.items()},
    }
    if args.json:
        emit_json(result)
        return
    link = f"links capped at {args.link_mb_s:g} MB/s per connection" if args.link_mb_s else "loopback"
    if args.latency_ms:
        link += f", {args.latency_ms:g} ms round trip"
    print(f"\n{args.workload} workload, {link}: {len(repos)} repos, {n_files} files, "
          f"{n_bytes / MB:.0f} MB; median of "
          f"{args.rounds} alternating rounds; {machine()}\n")
    print(table(
        ["contender", "median s", "MB/s", "bundle ratio", "CPU s/GB (client)"],
        [[names[k], f"{med[k]:.2f}", f"{rate[k]:.0f}",
          "-" if k == "bundle" else f"{rate['bundle'] / rate[k]:.2f}x", f"{cpu_per_gb[k]:.2f}"]
         for k in names],
    ))
    print()
    print(table(["measure", "ratio", "target", ""], [
        ["bundle vs snapshot_download loop", f"{ratios['bundle_vs_snapshot']:.2f}x",
         f">= {TARGET_VS_SNAPSHOT}x",
         verdict(ratios["bundle_vs_snapshot"], TARGET_VS_SNAPSHOT, higher_is_better=True)],
        ["bundle vs best curl", f"{ratios['bundle_vs_curl_best']:.2f}x", f">= {TARGET_VS_CURL}x",
         verdict(ratios["bundle_vs_curl_best"], TARGET_VS_CURL, higher_is_better=True)],
        ["bundle vs curl + fsync (same durability)", f"{ratios['bundle_vs_curl_durable']:.2f}x",
         f"(>= {TARGET_VS_CURL}x)",
         verdict(ratios["bundle_vs_curl_durable"], TARGET_VS_CURL, higher_is_better=True)],
    ]))
    print("\nbundle build fsyncs every blob before naming it (the store trusts names); curl "
          "leaves its bytes in the page cache. On loopback the disk's durable write speed, "
          "not the network, bounds a durable download: compare with the fsync row.")


if __name__ == "__main__":
    main()
