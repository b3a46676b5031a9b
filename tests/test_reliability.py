"""Reliability: whatever the network, the disk or a kill -9 does, a build ends with a
bundle that verifies or a clear error, and no unverified byte is ever visible.

Every test here is bounded in time: fault schedules are seeded (set
RELIABILITY_SEED to replay one), retries use millisecond backoff, stalls are
sub-second, kills land within a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.fetch import FetchPolicy
from builder.pipeline import build
from builder.verify import verify_bundle

SEED = int(os.environ.get("RELIABILITY_SEED", "20261121"))
ROOT = Path(__file__).resolve().parents[1]

# Every transient fault kind the fetch engine must ride out.
TRANSIENT = ["500", "429", "reset", "truncate", "stall", "corrupt"]


def fast_policy() -> FetchPolicy:
    return FetchPolicy(
        retries=5, backoff=0.005, backoff_max=0.02, stall_timeout=0.4,
        connect_timeout=2, retry_after_max=0.3, integrity_retries=1,
    )


def write_spec(folder: Path, name: str, files: dict[str, tuple[str, bytes]]) -> Path:
    """A url-only spec: artifact id -> (url, bytes), every sha256 pinned."""
    lines = ["[bundle]", f'name = "{name}"', 'version = "1.0.0"', ""]
    for art_id, (url, data) in files.items():
        lines += [
            "[[artifact]]",
            f'id = "{art_id}"',
            'source = "url"',
            f'url = "{url}"',
            f'sha256 = "{hashlib.sha256(data).hexdigest()}"',
            "",
        ]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines))
    return path


def store_blobs(store: Path) -> dict[str, Path]:
    blobs = store / "blobs" / "sha256"
    return {p.name: p for p in blobs.rglob("*") if p.is_file()} if blobs.exists() else {}


def assert_store_verified(store: Path) -> set[str]:
    """Every blob under its final name hashes to that name. Returns the names."""
    found = store_blobs(store)
    for name, path in found.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == name, f"unverified blob {path}"
    return set(found)


def random_payload(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def add_fault(server, path: str, kind: str, size: int, rng: random.Random) -> None:
    kw: dict = {}
    if kind == "429":
        kw["retry_after"] = "0"
    elif kind in ("reset", "truncate"):
        kw["after"] = rng.randrange(0, size)
    elif kind == "stall":
        kw.update(after=rng.randrange(0, size), seconds=1.0)
    elif kind == "corrupt":
        kw["offset"] = rng.randrange(0, size)
    server.fault(path, kind, **kw)


@pytest.mark.parametrize("run", range(10))
def test_random_fault_schedule_ends_verified_or_with_a_clear_error(run, file_server, tmp_path):
    rng = random.Random(SEED * 100 + run)
    files: dict[str, tuple[str, bytes]] = {}
    doomed: set[str] = set()
    for i in range(3):
        size = rng.choice([1, 4096, 200_000, 1_500_000])
        data = random_payload(rng, size)
        path = f"/reliability/{SEED}/{run}/file{i}.bin"
        file_server.add(path, data)
        art_id = f"file{i}"
        files[art_id] = (file_server.url + path, data)
        kinds = [rng.choice(TRANSIENT) for _ in range(rng.randrange(0, 3))]
        if rng.random() < 0.15:
            kinds += ["corrupt", "corrupt"]  # more than integrity_retries allows: permanent
            doomed.add(art_id)
        for kind in kinds:
            add_fault(file_server, path, kind, size, rng)
    spec = write_spec(tmp_path, f"rel-{run}", files)
    out, store = tmp_path / "out", tmp_path / "store"

    try:
        build(spec, out_dir=out, store_dir=store, jobs=3, progress=False, policy=fast_policy())
        error = None
    except BuildError as exc:
        error = exc

    blobs = assert_store_verified(store)
    good = {hashlib.sha256(d).hexdigest() for a, (_, d) in files.items() if a not in doomed}
    assert blobs <= good, "a blob of a corrupted artifact reached the store"
    if doomed:
        assert error is not None, f"corrupted {sorted(doomed)} but the build succeeded"
        message = str(error)
        lines = message.strip().splitlines()
        # One line for one failed artifact; several: a list, one "- artifact ..." line each.
        assert len(lines) == 1 or (lines[0].endswith("artifacts failed:")
                                   and all(ln.startswith("- artifact '") for ln in lines[1:])), message
        assert any(a in message for a in doomed), message
        assert not (out / f"rel-{run}").exists(), "a failed first build left a bundle folder"
    else:
        assert error is None, f"transient faults only, yet: {error}"
        report = verify_bundle(out / f"rel-{run}")
        assert report.ok, report.lines()
        assert blobs == good


def _cli(*args: str, env: dict | None = None) -> list[str]:
    return [sys.executable, "-m", "builder", *args]


def test_sigkill_at_random_points_then_rerun_completes_and_verifies(file_server, tmp_path):
    rng = random.Random(SEED)
    files = {}
    for i in range(4):
        data = random_payload(rng, 3_000_000)
        path = f"/kill/{SEED}/part{i}.bin"
        file_server.add(path, data)
        # Every GET of every file pauses once mid-body, so a build takes seconds and
        # kills land before, during and after the fetches, resumes included.
        file_server.fault(path, "stall", times=20, after=rng.randrange(1, len(data)),
                          seconds=0.6)
        files[f"part{i}"] = (file_server.url + path, data)
    spec = write_spec(tmp_path, "killed", files)
    out, store = tmp_path / "out", tmp_path / "store"
    cmd = _cli("build", str(spec), "--out", str(out), "--store", str(store), "--jobs", "2")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    kills = 0
    for _ in range(5):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert_store_verified(store)
        bundle = out / "killed"
        if (bundle / "bundle.json").exists():
            # Whatever is visible under the final name is complete and verified.
            assert verify_bundle(bundle).ok
    assert kills >= 1, "no kill landed: the build finished too fast to test anything"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = verify_bundle(out / "killed")
    assert report.ok, report.lines()
    assert assert_store_verified(store) == {hashlib.sha256(d).hexdigest() for _, d in files.values()}


def test_three_concurrent_builds_on_one_store_all_verify(file_server, tmp_path):
    rng = random.Random(SEED + 3)
    shared = random_payload(rng, 2_000_000)
    file_server.add(f"/conc/{SEED}/shared.bin", shared)
    file_server.fault(f"/conc/{SEED}/shared.bin", "stall", after=1000, seconds=0.3)
    specs = []
    for n in range(3):
        own = random_payload(rng, 1_000_000)
        file_server.add(f"/conc/{SEED}/own{n}.bin", own)
        specs.append(write_spec(tmp_path, f"conc-{n}", {
            "shared": (file_server.url + f"/conc/{SEED}/shared.bin", shared),
            "own": (file_server.url + f"/conc/{SEED}/own{n}.bin", own),
        }))
    out, store = tmp_path / "out", tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(_cli("build", str(s), "--out", str(out), "--store", str(store)),
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for s in specs
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
    for n in range(3):
        assert verify_bundle(out / f"conc-{n}").ok
    blobs = assert_store_verified(store)
    assert hashlib.sha256(shared).hexdigest() in blobs
    assert len(blobs) == 4  # the shared file is stored once


def _can_mount_tmpfs(target: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    target.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(target)],
                       capture_output=True)
    return r.returncode == 0


def test_disk_full_ends_with_a_clear_error_and_a_clean_store(file_server, tmp_path):
    disk = tmp_path / "small-disk"
    if not _can_mount_tmpfs(disk):
        pytest.skip("needs root and `mount -t tmpfs` to simulate a full disk")
    try:
        rng = random.Random(SEED + 4)
        big = random_payload(rng, 3_000_000)  # larger than the 2 MiB disk
        small = random_payload(rng, 10_000)
        file_server.add(f"/full/{SEED}/big.bin", big)
        file_server.add(f"/full/{SEED}/small.bin", small)
        spec = write_spec(tmp_path, "full", {
            "small": (file_server.url + f"/full/{SEED}/small.bin", small),
            "big": (file_server.url + f"/full/{SEED}/big.bin", big),
        })
        out, store = disk / "out", disk / "store"
        r = subprocess.run(
            _cli("build", str(spec), "--out", str(out), "--store", str(store)),
            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
            timeout=120,
        )
        assert r.returncode != 0
        err = r.stderr.strip()
        assert "Traceback" not in err
        assert "big" in err and ("space" in err.lower() or "full" in err.lower()), err
        blobs = assert_store_verified(store)
        assert hashlib.sha256(big).hexdigest() not in blobs
        assert not (out / "full").exists()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# --- malformed inputs ---------------------------------------------------------

BAD_SPECS = {
    "truncated": '[bundle]\nname = "x"\nversion = "1',
    "version-not-string": '[bundle]\nname = "x"\nversion = 1\n',
    "artifact-not-array": '[bundle]\nname = "x"\nversion = "1"\n[artifact]\nid = "a"\n',
    "id-traversal": '[bundle]\nname = "x"\nversion = "1"\n[[artifact]]\nid = "../../etc"\n'
                    'source = "url"\nurl = "https://e.org/a"\nsha256 = "' + "0" * 64 + '"\n',
    "name-traversal": '[bundle]\nname = "../x"\nversion = "1"\n',
    "file-scheme": '[bundle]\nname = "x"\nversion = "1"\n[[artifact]]\nid = "a"\n'
                   'source = "url"\nurl = "file:///etc/passwd"\nsha256 = "' + "0" * 64 + '"\n',
    "filename-traversal": '[bundle]\nname = "x"\nversion = "1"\n[[artifact]]\nid = "a"\n'
                          'source = "url"\nurl = "https://e.org/a"\nfilename = "../../../evil"\n'
                          'sha256 = "' + "0" * 64 + '"\n',
    "include-not-list": '[bundle]\nname = "x"\nversion = "1"\n[[artifact]]\nid = "a"\n'
                        'source = "hf"\nrepo = "o/n"\ninclude = "*.json"\n',
}


@pytest.mark.parametrize("kind", sorted(BAD_SPECS))
def test_malformed_spec_is_one_clear_line_and_writes_nothing(kind, tmp_path):
    from click.testing import CliRunner

    from builder.cli import main

    spec = tmp_path / "specs" / f"{kind}.toml"
    spec.parent.mkdir()
    spec.write_text(BAD_SPECS[kind])
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["build", str(spec), "--out", str(out),
                                       "--store", str(tmp_path / "store")])
    assert result.exit_code != 0
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    text = result.output.strip()
    assert "Traceback" not in text
    assert f"{kind}.toml" in text, text
    assert not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith(".")), \
        f"something was written for a bad spec: {list(out.iterdir())}"
    # Nothing escaped the folders the test gave the builder.
    assert {p.name for p in tmp_path.iterdir()} <= {"out", "specs", "store"}


def _manifest(files: list[dict], **top) -> dict:
    from runtime.manifest import FileEntry, compute_digest

    digest = compute_digest([FileEntry(f["path"], f["size"], f["sha256"]) for f in files
                             if isinstance(f.get("path"), str) and isinstance(f.get("size"), int)])
    data = {"format": 1, "name": "evil", "version": "1", "digest": digest, "created": "",
            "artifacts": [{"id": "a", "source": "url", "ref": "https://e.org/a", "revision": None,
                           "path": files[0]["path"] if files else "files/a/x", "files": files}]}
    data.update(top)
    return data


def _bad_bundles(root: Path, outside: Path) -> dict[str, Path]:
    """Bundle folders whose bundle.json (or tree) tries something it must not."""
    secret = outside / "secret.txt"
    secret.write_text("do not expose")
    sha = hashlib.sha256(secret.read_bytes()).hexdigest()
    size = secret.stat().st_size
    cases = {
        "truncated": '{"format": 1, "name": "evil", "artifacts": [',
        "wrong-types": _manifest([{"path": "files/a/x", "size": "12", "sha256": sha}]),
        "traversal": _manifest([{"path": "../outside/secret.txt", "size": size, "sha256": sha}]),
        "absolute": _manifest([{"path": str(secret), "size": size, "sha256": sha}]),
        "digest-edited": {**_manifest([{"path": "files/a/x", "size": size, "sha256": sha}]),
                          "digest": "0" * 64},
        "newer-format": _manifest([{"path": "files/a/x", "size": size, "sha256": sha}], format=99),
        "symlink": _manifest([{"path": "files/a/x", "size": size, "sha256": sha}]),
    }
    made = {}
    for kind, content in cases.items():
        folder = root / kind
        (folder / "files" / "a").mkdir(parents=True)
        text = content if isinstance(content, str) else json.dumps(content)
        (folder / "bundle.json").write_text(text)
        if kind == "symlink":
            (folder / "files" / "a" / "x").symlink_to(secret)
        made[kind] = folder
    return made


def test_malformed_bundles_are_refused_by_verify_with_the_file_and_field(tmp_path):
    from click.testing import CliRunner

    from builder.cli import main

    outside = tmp_path / "outside"
    outside.mkdir()
    for kind, folder in _bad_bundles(tmp_path / "bundles", outside).items():
        result = CliRunner().invoke(main, ["verify", str(folder)])
        assert result.exit_code == 1, (kind, result.output)
        text = result.output.strip()
        assert "Traceback" not in text, (kind, text)
        if kind == "symlink":
            assert "symlink" in text and "files/a/x" in text, text
        else:
            assert "bundle.json" in text, (kind, text)


def test_activate_skips_malformed_bundles_loudly_and_writes_nothing_outside_its_view(
    tmp_path, monkeypatch
):
    import warnings

    import runtime

    outside = tmp_path / "outside"
    outside.mkdir()
    bad = _bad_bundles(tmp_path / "bundles", outside)
    before = sorted(p.name for p in outside.iterdir())
    monkeypatch.setenv("BUNDLE_PATH", os.pathsep.join(str(p) for p in bad.values()))
    monkeypatch.setenv("OFFLINE_BUNDLE_SEARCH_ROOTS", "")
    monkeypatch.setenv("OFFLINE_BUNDLE_VIEW_DIR", str(tmp_path / "view"))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            act = runtime.activate()
        # None of these bundles may be attached as if it were fine...
        attached = {str(b.path) if hasattr(b, "path") else str(b) for b in act.bundles}
        for kind in ("truncated", "wrong-types", "traversal", "absolute", "digest-edited",
                     "newer-format"):
            assert str(bad[kind]) not in attached, kind
        # ...and the user is told, naming the file.
        told = " ".join(str(w.message) for w in caught) + " ".join(str(p) for p in act.problems)
        assert "bundle.json" in told, told
        # The secret reachable through the symlink is not served by the view.
        served = [p for p in (tmp_path / "view").rglob("*")
                  if p.is_file() and p.resolve() == (outside / "secret.txt").resolve()]
        assert not served, served
    finally:
        runtime.deactivate()
    assert sorted(p.name for p in outside.iterdir()) == before
