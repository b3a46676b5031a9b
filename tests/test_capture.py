"""`bundle capture`: one online run of a real script becomes a spec, a bundle, and the same
results offline.

Real processes throughout: `bundle capture` runs the script (transformers by repo id
with its image processor, timm's Hub weights, a torchvision checkpoint through
torch.hub) against the Hub stand-in and the file server; the same script then runs
from the read-only bundle under `bundle run --strict`, as an unprivileged user where
the machine allows it, and must print the same checksum of its outputs.

The torchvision weights are loaded with ``torch.hub.load_state_dict_from_url`` of the
registry's URL (``check_hash`` off): torchvision's own builders check the file's
sha256 against the 8 hex digits in its name, which random test weights cannot match.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TV_URL = "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth"
TIMM_TAG = "test_vit.r160_in1k"
TOKEN = "hf_capture_test_token_0123456789"

WORKLOAD = textwrap.dedent(f'''
    import hashlib, sys
    import torch
    import timm
    from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small
    from transformers import AutoImageProcessor, AutoModel

    torch.manual_seed(0)
    image = (torch.rand(3, 40, 48) * 255).to(torch.uint8)
    processor = AutoImageProcessor.from_pretrained("org/capture-vit")
    vit = AutoModel.from_pretrained("org/capture-vit").eval()
    tv = mobilenet_v3_small()
    url = MobileNet_V3_Small_Weights.IMAGENET1K_V1.url
    tv.load_state_dict(torch.hub.load_state_dict_from_url(url, weights_only=True, map_location="cpu"))
    tm = timm.create_model("{TIMM_TAG}", pretrained=True).eval()
    with torch.no_grad():
        pixels = processor(images=image, return_tensors="pt")["pixel_values"]
        outs = [vit(pixel_values=pixels).last_hidden_state, tv.eval()(torch.rand(1, 3, 64, 64)),
                tm(torch.rand(1, 3, 160, 160))]
    digest = hashlib.sha256(b"".join(o.double().round(decimals=4).numpy().tobytes() for o in outs))
    print("CHECKSUM", digest.hexdigest())
''')


@pytest.fixture(scope="module")
def hub_repos(hub, tmp_path_factory):
    """A private tiny ViT with its processor and an unused file; timm's tiny test model."""
    import timm
    import torch
    from timm.models import save_for_hf
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(1)
    vit = tmp_path_factory.mktemp("capture-vit")
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)).save_pretrained(vit)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(vit)
    (vit / "README.md").write_text("# a repo file the workload never reads\n")
    (vit / "extra" / "[draft]*.bin").parent.mkdir()
    (vit / "extra" / "[draft]*.bin").write_bytes(b"unused" * 100)
    commit = hub.add_repo("org/capture-vit", vit)
    hub.make_private("org/capture-vit", TOKEN)
    folder = tmp_path_factory.mktemp("capture-timm")
    save_for_hf(timm.create_model(TIMM_TAG, pretrained=False), str(folder), safe_serialization=True)
    timm_commit = hub.add_repo(f"timm/{TIMM_TAG}", folder)
    return {"vit": commit, "timm": timm_commit}


@pytest.fixture(scope="module")
def tv_weights() -> bytes:
    import io

    import torch
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(2)
    buf = io.BytesIO()
    torch.save(mobilenet_v3_small().state_dict(), buf)
    return buf.getvalue()


def bundle_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "builder", *args], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def checksum(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("CHECKSUM ")]
    assert len(lines) == 1, output
    return lines[0].split()[1]


def every_file(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_capture_then_build_then_the_same_outputs_offline_from_the_read_only_bundle(
        hub, file_server, hub_repos, tv_weights, tmp_path):
    from builder.spec import load_spec
    from tests.fixtures.bundles import make_read_only
    from tests.test_runtime_support import nobody_skip_reason, run_as_nobody

    file_server.add("/tv/mobilenet_v3_small-047dcff4.pth", tv_weights)
    mirror = f"https://download.pytorch.org/models/={file_server.url}/tv/"
    work = tmp_path / "work"
    work.mkdir()
    (work / "workload.py").write_text(WORKLOAD)
    spec, out, store = tmp_path / "specs" / "workload.toml", tmp_path / "dist", tmp_path / "store"
    hub.reset()

    # 1. Capture, with the token in the environment only, and build from what was fetched.
    captured = bundle_cli("capture", "--spec-out", str(spec), "--build", "--out", str(out),
                          "--store", str(store), "--mirror", mirror, "--", sys.executable, "workload.py",
                          env={"HF_TOKEN": TOKEN}, cwd=work)
    assert captured.returncode == 0, captured.stderr[-6000:]
    online = checksum(captured.stdout)
    assert "downloaded again: 0 file(s)" in captured.stderr, captured.stderr[-3000:]

    # The spec pins commits and holds only the files the run read.
    parsed = load_spec(spec)
    assert parsed.name == "workload"
    by_source = {a.source: a for a in parsed.artifacts}
    assert set(by_source) == {"hf", "timm", "torchvision"}
    vit = by_source["hf"]
    assert vit.get("repo") == "org/capture-vit" and vit.get("revision") == hub_repos["vit"]
    assert sorted(vit.include) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    timm_art = by_source["timm"]
    assert timm_art.get("model") == TIMM_TAG and timm_art.get("revision") == hub_repos["timm"]
    assert all(not p.startswith("README") for p in timm_art.include)
    tv = by_source["torchvision"]
    assert tv.get("weights") == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
    assert tv.get("sha256") == hashlib.sha256(tv_weights).hexdigest()
    record = json.loads(spec.with_name("workload.capture.json").read_text())
    assert record["exit_code"] == 0 and record["not_expressible"] == []
    assert {c["url"] for c in record["checkpoints"]} == {TV_URL}  # the URL as asked, not the mirror

    # Each file crossed the network once: the build took them all from the capture.
    assert len(file_server.gets("/tv/mobilenet_v3_small-047dcff4.pth")) == 1
    for weights in ("org/capture-vit/resolve", f"timm/{TIMM_TAG}/resolve"):
        gets = [r for r in hub.requests_for(weights) if r.method == "GET" and r.path.endswith(".safetensors")]
        assert len(gets) == 1, gets
    assert all(r.authorized for r in hub.requests_for("org/capture-vit"))  # the token was used ...
    bundle = out / "workload"
    for path in [spec, spec.with_name("workload.capture.json"), *every_file(bundle)]:
        assert TOKEN.encode() not in path.read_bytes(), path  # ... and written nowhere

    # 2. Offline, read-only, strict, unprivileged: the same outputs.
    make_read_only(bundle)
    reason = nobody_skip_reason()
    offline_env = {"HF_ENDPOINT": "https://huggingface.co", "HF_TOKEN": ""}
    if reason is None:
        proc = run_as_nobody("", ["run", "--strict", "--", sys.executable, "{base}/work/workload.py"],
                             binds={"dist": out, "work": work},
                             env={"BUNDLE_PATH": "{base}/dist", "OFFLINE_BUNDLE_SEARCH_ROOTS": "",
                                  **offline_env},
                             argv0=[sys.executable, "-m", "builder"])
    else:  # still a fresh process, offline and strict, as this user
        print(f"as the current user: {reason}")
        proc = bundle_cli("run", "--strict", "--", sys.executable, "workload.py", cwd=work,
                          env={"BUNDLE_PATH": str(out), "OFFLINE_BUNDLE_SEARCH_ROOTS": "", **offline_env})
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert checksum(proc.stdout) == online

    # 3. The captured spec builds again from scratch to the same bundle.
    again = bundle_cli("build", str(spec), "--out", str(tmp_path / "dist2"), "--store", str(tmp_path / "store2"),
                       "--mirror", mirror, "--no-progress", env={"HF_TOKEN": TOKEN})
    assert again.returncode == 0, again.stderr[-3000:]
    digest = json.loads((bundle / "bundle.json").read_text())["digest"]
    assert json.loads((tmp_path / "dist2" / "workload" / "bundle.json").read_text())["digest"] == digest


def test_a_failing_command_passes_its_exit_code_and_what_it_fetched_is_still_reported(file_server, tmp_path):
    file_server.add("/capture/labels.csv", b"image,label\na.png,1\n")
    script = tmp_path / "fails.py"
    script.write_text(textwrap.dedent(f'''
        import sys, urllib.request
        print(urllib.request.urlopen("{file_server.url}/capture/labels.csv").read().decode())
        import requests  # recorded too (urllib3 under it)
        print("api:", requests.post("{file_server.url}/capture/api", json={{}}).status_code)
        sys.exit(3)
    '''))
    spec = tmp_path / "fails.toml"
    result = bundle_cli("capture", "--spec-out", str(spec), "--build", "--store", str(tmp_path / "store"),
                        "--", sys.executable, str(script), cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "exited with 3" in result.stderr and "COMMAND FAILED (exit 3)" in result.stderr
    assert "/capture/labels.csv" in result.stderr  # reported ...
    assert f"POST {file_server.url}/capture/api" in result.stderr and "an API call" in result.stderr
    text = spec.read_text()
    assert text.startswith("# WARNING: the command exited with 3")  # ... and written, flagged
    assert hashlib.sha256(b"image,label\na.png,1\n").hexdigest() in text
    assert not (tmp_path / "bundles-dist").exists()  # not built


def test_a_command_that_fetches_nothing_is_told_so_and_gets_no_spec(tmp_path):
    result = bundle_cli("capture", "--spec-out", str(tmp_path / "none.toml"), "--store", str(tmp_path / "s"),
                        "--", sys.executable, "-c", "print('hello')", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hello" in result.stdout
    assert "fetched nothing" in result.stderr and "no spec written" in result.stderr
    assert not (tmp_path / "none.toml").exists()


def test_run_strict_makes_every_python_child_strict_without_activate(bundle_factory, tmp_path):
    """`bundle run --strict -- python x.py`: x.py never calls runtime.activate() and is
    refused its download anyway, with the host and URL named."""
    bundle = bundle_factory(f'''
        [bundle]
        name = "strict-child"
        version = "1.0.0"

        [[artifact]]
        id = "notes"
        source = "url"
        url = "https://example.org/notes.txt"
        sha256 = "{hashlib.sha256(b"notes").hexdigest()}"
        ''', urls={"https://example.org/notes.txt": b"notes"})
    script = tmp_path / "fetch.py"
    script.write_text("import urllib.request\nurllib.request.urlopen('https://example.com/missing.bin')\n")
    result = bundle_cli("run", "--strict", "--", sys.executable, str(script),
                        env={"BUNDLE_PATH": str(bundle), "OFFLINE_BUNDLE_SEARCH_ROOTS": ""})
    assert result.returncode != 0
    assert "OfflineViolation" in result.stderr
    assert "example.com" in result.stderr and "https://example.com/missing.bin" in result.stderr


def test_spec_writer_pins_exact_file_names_and_the_build_accepts_the_spec(tmp_path):
    """Names with glob characters match only themselves; ids are unique and valid."""
    import fnmatch

    from builder.capture.reconcile import Capture, CapturedFile, HubCapture, UrlCapture
    from builder.capture.spec_writer import spec_text
    from builder.spec import load_spec

    names = ["weights[1].bin", "a*b?.json", "sub/dir/model.safetensors"]
    files = [CapturedFile(n, tmp_path, 10, "0" * 64) for n in names]
    capture = Capture(hub=[HubCapture("org/x", "model", "a" * 40, ["main"], files),
                           HubCapture("other/x", "model", "b" * 40, [], files[:1])],
                      urls=[UrlCapture("https://files.example.org/x/data.csv", 5, "1" * 64)])
    path = tmp_path / "x.toml"
    path.write_text(spec_text(capture, name="x", command=["python", "x.py"]))
    spec = load_spec(path)
    ids = [a.id for a in spec.artifacts]
    assert len(set(ids)) == 3
    patterns = spec.artifacts[0].include
    every = names + ["weights1.bin", "aXbY.json", "sub/dir/other.safetensors"]
    assert sorted(n for n in every if any(fnmatch.fnmatchcase(n, p) for p in patterns)) == sorted(names)
    assert spec.artifacts[2].get("sha256") == "1" * 64
