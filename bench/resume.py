"""Resume after a kill: bytes fetched again / bytes that were missing.

A Hub repo with one large file is fetched by ``bundle build`` (the CLI, in its
own process); when its partial download in the store reaches half the file, the
process gets SIGKILL. The rerun must fetch only what was missing. The bytes are
counted by the CDN that serves the file (not by the builder), so the figure is
independent of the code under test:

    re-fetch ratio = bytes the CDN sent during the rerun / (size - bytes on disk after the kill)

Peer, same protocol in alternating rounds: ``snapshot_download`` in a process
killed when its ``.incomplete`` blob reaches half, then run again (huggingface_hub
resumes ``.incomplete`` files with a Range request). Target: ratio <= 1.1.

Examples::

    python -m bench.resume --scale quick        # 100 MB file, < 1 minute
    python -m bench.resume --scale full         # 1 GB file
"""

from __future__ import annotations

import glob
import os
import signal
import statistics
import subprocess
import sys
import time

from bench.common import (
    MB,
    bench_parser,
    check_disk,
    child_env,
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

SCALES = {"quick": 0.1, "full": 1.0}
REPO = "bench/resume-1g"
FULL_SIZE = 1000 * MB
TARGET = 1.1
KILL_AT = 0.5

_SNAPSHOT_CODE = """
import sys
from huggingface_hub import snapshot_download
snapshot_download(sys.argv[2], cache_dir=sys.argv[1])
"""


def _hub_env(hub: str) -> dict[str, str]:
    return {"HF_ENDPOINT": hub, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "0", "HF_TOKEN": ""}


def _partial_size(pattern: str) -> int:
    sizes = []
    for p in glob.glob(pattern, recursive=True):
        try:
            sizes.append(os.path.getsize(p))
        except OSError:
            pass
    return max(sizes, default=0)


def _kill_at(cmd: list[str], env: dict[str, str], pattern: str, threshold: int) -> tuple[int, bool]:
    """Run ``cmd``; SIGKILL it once a file matching ``pattern`` holds ``threshold`` bytes.

    Returns:
        (bytes in the partial file after the kill, whether the kill happened before the end).
    """
    proc = subprocess.Popen(cmd, env=child_env(env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    killed = False
    try:
        while proc.poll() is None:
            if _partial_size(pattern) >= threshold:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.002)
    finally:
        proc.wait()
    return _partial_size(pattern), killed


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("bench.resume", __doc__)
    parser.add_argument("--scale", default="quick", help="quick (100 MB), full (1 GB), or a factor")
    parser.add_argument("--rounds", type=int, default=3, help="kill-and-rerun rounds per contender")
    args = parser.parse_args(argv)
    scale = scale_factor(args.scale, SCALES)
    size = int(FULL_SIZE * scale)

    base = scratch_dir("resume")
    check_disk(base.parent, size * 3)
    data = base / "data"
    make_hub_data(data, {REPO: (size, 2)})
    print(f"resume benchmark: one {size / MB:.0f} MB file, SIGKILL at {KILL_AT:.0%} "
          f"({machine()})", file=sys.stderr)
    rows: dict[str, list[dict]] = {"bundle": [], "snapshot": []}
    try:
        with Servers(data) as servers:
            env = _hub_env(servers.hub)
            for r in range(args.rounds):
                for kind in rows:
                    work = scratch_dir(f"resume-{kind}")
                    try:
                        if kind == "bundle":
                            spec = work / "spec.toml"
                            spec.write_text(
                                '[bundle]\nname = "bench-resume"\nversion = "1.0.0"\n'
                                'title = "Resume benchmark"\n\n[[artifact]]\nid = "big"\n'
                                f'source = "hf"\nrepo = "{REPO}"\n'
                            )
                            cmd = [sys.executable, "-m", "builder", "build", str(spec),
                                   "--out", str(work / "out"), "--store", str(work / "store"),
                                   "--no-progress", "--json"]
                            pattern = str(work / "store" / "partial" / "*.part")
                        else:
                            cmd = [sys.executable, "-c", _SNAPSHOT_CODE, str(work / "hf"), REPO]
                            pattern = str(work / "hf" / "**" / "*.incomplete")
                        have, killed = _kill_at(cmd, env, pattern, int(size * KILL_AT))
                        if not killed:
                            print(f"  {kind}: finished before the kill; round skipped "
                                  "(use a larger --scale)", file=sys.stderr)
                            continue
                        before = servers.cdn_bytes_sent()
                        started = time.perf_counter()
                        if kind == "bundle":
                            report = run_json(cmd, env=env)
                            assert report["size"] >= size, report
                        else:
                            subprocess.run(cmd, env=child_env(env), check=True,
                                           capture_output=True)
                        seconds = time.perf_counter() - started
                        refetched = servers.cdn_bytes_sent() - before
                        missing = size - have
                        rows[kind].append({"have": have, "missing": missing,
                                           "refetched": refetched, "seconds": seconds,
                                           "ratio": refetched / missing})
                        print(f"  round {r + 1} {kind:<8}: killed at {have / size:.0%}, rerun "
                              f"fetched {refetched / MB:.1f} MB of {missing / MB:.1f} MB missing "
                              f"({refetched / missing:.3f}x) in {seconds:.2f} s", file=sys.stderr)
                    finally:
                        remove(work)
    finally:
        remove(base)

    med = {k: statistics.median(x["ratio"] for x in v) if v else float("nan")
           for k, v in rows.items()}
    result = {"benchmark": "resume", "scale": scale, "size": size, "machine": machine(),
              "median_ratio": med, "rounds": rows}
    if args.json:
        emit_json(result)
        return
    print(f"\none {size / MB:.0f} MB file, SIGKILL at ~{KILL_AT:.0%}, bytes counted by the "
          f"server; medians of {args.rounds} rounds; {machine()}\n")
    names = {"bundle": "bundle build (CLI)", "snapshot": "snapshot_download"}
    print(table(["contender", "killed at", "re-fetched / missing", "rerun s"], [
        [names[k], f"{statistics.median(x['have'] for x in v) / size:.0%}", f"{med[k]:.3f}x",
         f"{statistics.median(x['seconds'] for x in v):.2f}"]
        for k, v in rows.items() if v
    ]))
    print()
    print(table(["measure", "value", "target", ""], [
        ["bundle build re-fetch / missing bytes", f"{med['bundle']:.3f}x", f"<= {TARGET}x",
         verdict(med["bundle"], TARGET, higher_is_better=False)],
    ]))


if __name__ == "__main__":
    main()
