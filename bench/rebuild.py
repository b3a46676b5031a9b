"""Rebuild cost: a no-op rebuild of an unchanged ~1 GB bundle, and a rebuild after one file changed.

The bundle: two Hub repos (a large ``model.safetensors`` and small JSON files
each) and one url artifact, built once into a fresh store. Then, alternating
with the peer in every round:

* no-op: ``bundle build SPEC`` again (the CLI, a fresh process each time, as a
  user reruns it) vs re-running ``snapshot_download`` of the same repos over its
  warm cache (a fresh process too). Target: the rebuild under 1 s.
* one file changed: a small JSON file of one repo changes on the Hub (a new
  commit of ``main``); ``bundle build --refresh`` vs ``snapshot_download`` again
  over the warm cache. Both should fetch only that file.

Examples::

    python -m bench.rebuild --scale quick       # ~50 MB bundle, < 1 minute
    python -m bench.rebuild --scale full        # ~1 GB bundle
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench.common import (
    MB,
    bench_parser,
    check_disk,
    emit_json,
    json_file,
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

SCALES = {"quick": 0.05, "full": 1.0}
REPOS = {"bench/encoder-600m": (600 * MB, 20), "bench/decoder-300m": (300 * MB, 20)}
URL_FILE = ("head-100m.pt", 100 * MB)
CHANGED = ("bench/decoder-300m", "extra/part-007.json")
TARGET_NOOP_S = 1.0


def _spec(data_dir: Path, cdn: str) -> str:
    digests = json.loads((data_dir / "digests.json").read_text())["files"]
    name = URL_FILE[0]
    lines = ['[bundle]', 'name = "bench-rebuild"', 'version = "1.0.0"',
             'title = "Rebuild benchmark bundle"', ""]
    for i, repo in enumerate(REPOS):
        lines += ["[[artifact]]", f'id = "repo-{i}"', 'source = "hf"', f'repo = "{repo}"', ""]
    lines += ["[[artifact]]", 'id = "head"', 'source = "url"',
              f'url = "{cdn}/blobs/{digests[name]}"', f'filename = "{name}"',
              f'sha256 = "{digests[name]}"', ""]
    return "\n".join(lines)


def _hub_env(hub: str) -> dict[str, str]:
    return {"HF_ENDPOINT": hub, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "0", "HF_TOKEN": ""}


_SNAPSHOT_CODE = """
import json, sys, time
t0 = time.perf_counter()
from huggingface_hub import snapshot_download
t1 = time.perf_counter()
for repo in sys.argv[2:]:
    snapshot_download(repo, cache_dir=sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t1, "imports": t1 - t0}))
"""


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("bench.rebuild", __doc__)
    parser.add_argument("--scale", default="quick", help="quick (5%%), full (~1 GB), or a factor")
    parser.add_argument("--rounds", type=int, default=5, help="no-op rounds (median taken)")
    parser.add_argument("--change-rounds", type=int, default=3, help="one-file-changed rounds")
    args = parser.parse_args(argv)
    scale = scale_factor(args.scale, SCALES)

    work = scratch_dir("rebuild")
    total = int((sum(s for s, _ in REPOS.values()) + URL_FILE[1]) * scale)
    check_disk(work.parent, total * 3)
    data = work / "data"
    n_files, n_bytes = make_hub_data(
        data, {r: (int(s * scale), n) for r, (s, n) in REPOS.items()},
        {URL_FILE[0]: int(URL_FILE[1] * scale)},
    )
    print(f"rebuild benchmark: bundle of {n_files} files, {n_bytes / MB:.0f} MB ({machine()})",
          file=sys.stderr)
    spec, out, store, cache = work / "spec.toml", work / "out", work / "store", work / "hf-cache"
    noop: dict[str, list[float]] = {"cli": [], "inproc": [], "snap": [], "snap_inproc": []}
    changed: dict[str, list[float]] = {"cli": [], "snap": [], "fetched": []}
    try:
        servers = Servers(data)
        with servers:
            spec.write_text(_spec(data, servers.cdn))
            env = _hub_env(servers.hub)
            build_cmd = [sys.executable, "-m", "builder", "build", str(spec), "--out", str(out),
                         "--store", str(store), "--json"]
            snap_cmd = [sys.executable, "-c", _SNAPSHOT_CODE, str(cache), *REPOS]
            first = run_json(build_cmd, env=env)
            run_json(snap_cmd, env=env)
            print(f"  first build: {first['seconds']:.1f} s, {first['fetched_bytes'] / MB:.0f} MB",
                  file=sys.stderr)
            for r in range(args.rounds):
                t = time.perf_counter()
                report = run_json(build_cmd, env=env)
                noop["cli"].append(time.perf_counter() - t)
                noop["inproc"].append(report["seconds"])
                assert report["fetched_bytes"] == 0 and report["unchanged"], report
                t = time.perf_counter()
                snap = run_json(snap_cmd, env=env)
                noop["snap"].append(time.perf_counter() - t)
                noop["snap_inproc"].append(snap["seconds"])
                print(f"  no-op round {r + 1}: bundle build {noop['cli'][-1]:.3f} s "
                      f"(build() {report['seconds']:.3f} s), snapshot_download "
                      f"{noop['snap'][-1]:.3f} s", file=sys.stderr)
        # One file changes upstream: restart the Hub on the same ports with the new commit.
        repo, rel = CHANGED
        for r in range(args.change_rounds):
            json_file(data / "hub" / repo.replace("/", "--") / rel, seed=10_000 + r, size=4000)
            with Servers(data, ports=servers.ports):
                t = time.perf_counter()
                report = run_json([*build_cmd, "--refresh"], env=env)
                changed["cli"].append(time.perf_counter() - t)
                changed["fetched"].append(report["fetched_files"])
                t = time.perf_counter()
                run_json(snap_cmd, env=env)
                changed["snap"].append(time.perf_counter() - t)
            print(f"  changed round {r + 1}: bundle build --refresh {changed['cli'][-1]:.3f} s "
                  f"(fetched {report['fetched_files']} file), snapshot_download "
                  f"{changed['snap'][-1]:.3f} s", file=sys.stderr)
    finally:
        remove(work)

    import statistics

    med = {k: statistics.median(v) for k, v in noop.items()}
    cmed = {k: statistics.median(v) for k, v in changed.items()}
    result = {
        "benchmark": "rebuild", "scale": scale, "files": n_files, "bytes": n_bytes,
        "machine": machine(), "noop_median_s": med, "changed_median_s": cmed,
        "samples": {"noop": noop, "changed": changed},
        "ratios": {"noop_snapshot_over_bundle": med["snap"] / med["cli"],
                   "changed_snapshot_over_bundle": cmed["snap"] / cmed["cli"]},
    }
    if args.json:
        emit_json(result)
        return
    print(f"\nbundle of {n_files} files, {n_bytes / MB:.0f} MB; medians "
          f"({args.rounds} no-op, {args.change_rounds} changed rounds, alternating); {machine()}\n")
    print(table(["measure", "bundle build", "snapshot_download", "snapshot / bundle"], [
        ["no-op rerun, whole process", f"{med['cli']:.3f} s", f"{med['snap']:.3f} s",
         f"{med['snap'] / med['cli']:.2f}x"],
        ["no-op rerun, in-process work", f"{med['inproc']:.3f} s", f"{med['snap_inproc']:.3f} s",
         f"{med['snap_inproc'] / med['inproc']:.2f}x"],
        ["one file changed (--refresh), whole process", f"{cmed['cli']:.3f} s",
         f"{cmed['snap']:.3f} s", f"{cmed['snap'] / cmed['cli']:.2f}x"],
    ]))
    print()
    print(table(["measure", "value", "target", ""], [
        ["no-op rebuild (whole `bundle build` process)", f"{med['cli']:.3f} s",
         f"< {TARGET_NOOP_S} s", verdict(med["cli"], TARGET_NOOP_S, higher_is_better=False)],
        ["files fetched after one changed", f"{cmed['fetched']:.0f}", "1",
         verdict(cmed["fetched"], 1, higher_is_better=False)],
    ]))


if __name__ == "__main__":
    main()
