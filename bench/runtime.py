"""Runtime cost: ``activate()`` with 200 mounted datasets; ``from_pretrained`` from a bundle vs the HF cache.

1. ``import runtime`` + ``runtime.activate()`` in a fresh process, with 200 bundles
   mounted the way Kaggle mounts datasets (``ROOT/SLUG/bundle.json``, found through
   the search roots, each with a Hub snapshot, a torchvision checkpoint and a
   url file). Timed inside the process (interpreter start excluded), median (and
   minimum: the least disturbed run on a shared machine) of several processes.
   Peer, in the same processes: importing huggingface_hub's download API, the
   library activate() exists to configure. Target: < 50 ms.
2. ``ViTModel.from_pretrained(REPO)`` of a random ViT (hidden 256, 6 layers,
   safetensors) published on the Hub stand-in, loaded (a) from a bundle built by
   ``bundle build`` after ``runtime.activate()`` and (b) from a normal HF cache
   filled by ``snapshot_download`` (``HF_HUB_OFFLINE=1``, as offline users run).
   Fresh processes alternate between the two; each loads the model several times;
   medians of the loads after the first (and of the first ones separately).
   Target: bundle / cache <= 1.05.

Examples::

    python -m bench.runtime --scale quick       # 3 activate processes, 2x2 load processes
    python -m bench.runtime --scale full        # 11 activate processes, 2x5 load processes
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
from pathlib import Path

from bench.common import (
    bench_parser,
    emit_json,
    machine,
    make_hub_data,
    remove,
    run_json,
    scratch_dir,
    table,
    verdict,
)
from bench.servers import Servers

SCALES = {
    "quick": {"activate_runs": 5, "load_procs": 2, "loads": 6},
    "full": {"activate_runs": 15, "load_procs": 5, "loads": 10},
}
N_DATASETS = 200
MODEL_REPO = "bench/vit-small"
TARGET_ACTIVATE_MS = 50.0
TARGET_LOAD_RATIO = 1.05

_ACTIVATE_CODE = """
import json, time, warnings
t0 = time.perf_counter()
import runtime
t1 = time.perf_counter()
act = runtime.activate()
t2 = time.perf_counter()
from huggingface_hub import hf_hub_download  # huggingface_hub imports lazily: force it
t3 = time.perf_counter()
assert len(act.bundles) == int(__import__("sys").argv[1]), len(act.bundles)
print(json.dumps({"import": t1 - t0, "activate": t2 - t1, "total": t2 - t0,
                  "import_huggingface_hub": t3 - t2}))
"""

_LOAD_CODE = """
import json, os, sys, time
mode, repo, loads = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "bundle":
    import runtime
    runtime.activate()
import torch, transformers
from transformers import ViTModel
torch.set_num_threads(1)
times = []
for _ in range(loads):
    t = time.perf_counter()
    model = ViTModel.from_pretrained(repo)
    times.append(time.perf_counter() - t)
    del model
print(json.dumps({"loads": times}))
"""


# --- 200 mounted datasets -------------------------------------------------------


def make_mounted_datasets(root: Path, n: int) -> None:
    """``root/dataset-NNN/`` bundles, each with an hf snapshot, a checkpoint and a url file."""
    from runtime.manifest import ArtifactEntry, FileEntry, Manifest, write_manifest

    for i in range(n):
        bundle = root / f"dataset-{i:03d}"
        repo = f"models--org{i}--model-{i}"
        commit = hashlib.sha1(f"{i}".encode()).hexdigest()
        files = {
            f"hf/{repo}/snapshots/{commit}/config.json": b'{"model_type": "vit"}',
            f"hf/{repo}/snapshots/{commit}/model.safetensors": os.urandom(256),
            f"hf/{repo}/snapshots/{commit}/preprocessor_config.json": b"{}",
            f"hf/{repo}/refs/main": commit.encode(),
            f"torch/hub/checkpoints/net{i}-{commit[:8]}.pth": os.urandom(128),
            f"files/extra-{i}/labels.csv": b"a,b\n1,2\n",
        }
        entries = {}
        for rel, data in files.items():
            p = bundle / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            entries[rel] = FileEntry(rel, len(data), hashlib.sha256(data).hexdigest())
        hf = [e for rel, e in entries.items() if rel.startswith("hf/")]
        artifacts = [
            ArtifactEntry(f"model-{i}", "hf", f"org{i}/model-{i}", commit,
                          f"hf/{repo}/snapshots/{commit}", hf),
            ArtifactEntry(f"net-{i}", "torchvision", f"Net{i}_Weights.DEFAULT", None,
                          f"torch/hub/checkpoints/net{i}-{commit[:8]}.pth",
                          [entries[f"torch/hub/checkpoints/net{i}-{commit[:8]}.pth"]]),
            ArtifactEntry(f"extra-{i}", "url", f"https://example.org/{i}/labels.csv", None,
                          f"files/extra-{i}/labels.csv", [entries[f"files/extra-{i}/labels.csv"]]),
        ]
        write_manifest(bundle, Manifest(name=f"dataset-{i:03d}", version="1.0.0",
                                        artifacts=artifacts, created="2026-01-01T00:00:00Z"))


def bench_activate(work: Path, runs: int) -> dict[str, list[float]]:
    root = work / "kaggle-input"
    make_mounted_datasets(root, N_DATASETS)
    env = {"BUNDLE_PATH": "", "OFFLINE_BUNDLE_SEARCH_ROOTS": f"{root}/*"}
    out: dict[str, list[float]] = {"import": [], "activate": [], "total": [],
                                   "import_huggingface_hub": []}
    for r in range(runs):
        result = run_json([sys.executable, "-c", _ACTIVATE_CODE, str(N_DATASETS)], env=env)
        for k in out:
            out[k].append(result[k])
        print(f"  activate run {r + 1}/{runs}: import runtime + activate() "
              f"{result['total'] * 1000:.1f} ms (import huggingface_hub "
              f"{result['import_huggingface_hub'] * 1000:.0f} ms)", file=sys.stderr)
    return out


# --- from_pretrained: bundle vs HF cache -----------------------------------------


def save_model(folder: Path) -> None:
    import torch
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=256, num_hidden_layers=6, num_attention_heads=4,
                       intermediate_size=1024, image_size=224, patch_size=16)
    ViTModel(config).save_pretrained(folder, safe_serialization=True)
    for p in folder.iterdir():
        os.chmod(p, 0o644)  # save_pretrained writes 0600 (FIELD-NOTES)


def bench_load(work: Path, procs: int, loads: int) -> dict[str, list[list[float]]]:
    from bench.common import MB

    data = work / "data"
    make_hub_data(data, {})
    folder = data / "hub" / MODEL_REPO.replace("/", "--")
    save_model(folder)
    big = {p.name: _sha256(p) for p in folder.iterdir() if p.stat().st_size > 64 * 1024}
    digests_path = data / "digests.json"
    import json

    digests = json.loads(digests_path.read_text())
    digests[folder.name] = big
    digests_path.write_text(json.dumps(digests))
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(f"  model: {MODEL_REPO}, {size / MB:.1f} MB safetensors + config", file=sys.stderr)
    out: dict[str, list[list[float]]] = {"bundle": [], "cache": []}
    with Servers(data) as servers:
        hub_env = {"HF_ENDPOINT": servers.hub, "HF_HUB_DISABLE_TELEMETRY": "1",
                   "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_TOKEN": ""}
        spec = work / "spec.toml"
        spec.write_text('[bundle]\nname = "bench-vit"\nversion = "1.0.0"\n'
                        'title = "Runtime benchmark"\n\n[[artifact]]\nid = "vit"\n'
                        f'source = "hf"\nrepo = "{MODEL_REPO}"\n')
        run_json([sys.executable, "-m", "builder", "build", str(spec), "--out", str(work / "out"),
                  "--store", str(work / "store"), "--json"], env=hub_env)
        run_json([sys.executable, "-c",
                  "import json,sys; from huggingface_hub import snapshot_download as s; "
                  "print(json.dumps({'path': s(sys.argv[1], cache_dir=sys.argv[2])}))",
                  MODEL_REPO, str(work / "hf-cache")], env=hub_env)
    envs = {
        "bundle": {"BUNDLE_PATH": str(work / "out"), "OFFLINE_BUNDLE_SEARCH_ROOTS": "",
                   "HF_HUB_OFFLINE": "0", "HF_HOME": str(work / "empty-home")},
        "cache": {"HF_HUB_CACHE": str(work / "hf-cache"), "HF_HUB_OFFLINE": "1",
                  "BUNDLE_PATH": "", "HF_HOME": str(work / "empty-home")},
    }
    for r in range(procs):
        for mode in ("bundle", "cache"):
            env = {**envs[mode], "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_VERBOSITY": "error",
                   "OMP_NUM_THREADS": "1"}
            env.pop("HF_ENDPOINT", None)
            result = run_json([sys.executable, "-c", _LOAD_CODE, mode, MODEL_REPO, str(loads)],
                              env=env)
            out[mode].append(result["loads"])
            print(f"  load process {r + 1}/{procs} {mode:<6}: "
                  + " ".join(f"{t * 1000:.0f}" for t in result["loads"]) + " ms", file=sys.stderr)
    return out


def _sha256(path: Path) -> str:
    from bench.servers import sha256_of

    return sha256_of(path)


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("bench.runtime", __doc__)
    parser.add_argument("--scale", default="quick", choices=sorted(SCALES))
    parser.add_argument("--skip-load", action="store_true", help="only the activate() part")
    args = parser.parse_args(argv)
    cfg = SCALES[args.scale]
    work = scratch_dir("runtime")
    print(f"runtime benchmark ({machine()})", file=sys.stderr)
    try:
        act = bench_activate(work, cfg["activate_runs"])
        load = None if args.skip_load else bench_load(work, cfg["load_procs"], cfg["loads"])
    finally:
        remove(work)

    act_ms = {k: statistics.median(v) * 1000 for k, v in act.items()}
    act_min = {k: min(v) * 1000 for k, v in act.items()}
    result = {"benchmark": "runtime", "machine": machine(), "datasets": N_DATASETS,
              "activate_median_ms": act_ms, "activate_min_ms": act_min,
              "activate_samples_s": act}
    rows = [
        [f"import runtime + activate(), {N_DATASETS} mounted bundles (median)",
         f"{act_ms['total']:.1f} ms", f"< {TARGET_ACTIVATE_MS:.0f} ms",
         verdict(act_ms["total"], TARGET_ACTIVATE_MS, higher_is_better=False)],
        [f"import runtime + activate(), {N_DATASETS} mounted bundles (min)",
         f"{act_min['total']:.1f} ms", f"< {TARGET_ACTIVATE_MS:.0f} ms",
         verdict(act_min["total"], TARGET_ACTIVATE_MS, higher_is_better=False)],
    ]
    detail = [
        ["import runtime (median / min)", f"{act_ms['import']:.1f} / {act_min['import']:.1f} ms"],
        ["runtime.activate() (median / min)",
         f"{act_ms['activate']:.1f} / {act_min['activate']:.1f} ms"],
        ["peer: `from huggingface_hub import hf_hub_download` (median / min)",
         f"{act_ms['import_huggingface_hub']:.1f} / {act_min['import_huggingface_hub']:.1f} ms"],
    ]
    if load is not None:
        warm = {k: statistics.median(t for proc in v for t in proc[1:]) for k, v in load.items()}
        first = {k: statistics.median(proc[0] for proc in v) for k, v in load.items()}
        ratio = warm["bundle"] / warm["cache"]
        result.update({"load_warm_median_s": warm, "load_first_median_s": first,
                       "load_ratio_bundle_over_cache": ratio, "load_samples_s": load})
        rows.append(["from_pretrained: bundle / HF cache (median of repeat loads)",
                     f"{ratio:.3f}x", f"<= {TARGET_LOAD_RATIO}x",
                     verdict(ratio, TARGET_LOAD_RATIO, higher_is_better=False)])
        detail += [
            ["from_pretrained from the bundle (after activate), repeat loads",
             f"{warm['bundle'] * 1000:.1f} ms"],
            ["from_pretrained from the HF cache (HF_HUB_OFFLINE=1), repeat loads",
             f"{warm['cache'] * 1000:.1f} ms"],
            ["first load in a process: bundle / HF cache",
             f"{first['bundle'] * 1000:.0f} / {first['cache'] * 1000:.0f} ms "
             f"({first['bundle'] / first['cache']:.3f}x)"],
        ]
    if args.json:
        emit_json(result)
        return
    print(f"\n{machine()}\n")
    print(table(["measure", "median"], detail))
    print()
    print(table(["measure", "value", "target", ""], rows))


if __name__ == "__main__":
    main()
