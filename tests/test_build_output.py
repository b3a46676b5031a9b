"""What `bundle build` tells the user while it works: a line per retry and per resume
(by default, not only at INFO), -q and -v, a summary line with the counts, and a
hint for the Hub that points at HF_ENDPOINT rather than --mirror."""

from __future__ import annotations

import os
import textwrap

import pytest
from click.testing import CliRunner

from builder.cli import main
from builder.fetch import FetchPolicy


@pytest.fixture
def fast_retries(monkeypatch, hub):
    """Back-off in milliseconds: the faults are real, the waiting is not the test. The
    Hub stand-in is shared by the session: faults a test left unused are cleared."""
    monkeypatch.setattr(FetchPolicy, "__init__", _fast_init(FetchPolicy.__init__))
    yield
    hub.reset()


def _fast_init(original):
    def init(self, *args, **kwargs):
        kwargs.setdefault("backoff", 0.01)
        kwargs.setdefault("backoff_max", 0.02)
        original(self, *args, **kwargs)
    return init


def _spec(tmp_path, repo):
    spec = tmp_path / "spec.toml"
    spec.write_text(textwrap.dedent(f'''
        [bundle]
        name = "noisy-build"
        version = "1.0.0"

        [[artifact]]
        id = "weights"
        source = "hf"
        repo = "{repo}"
        '''))
    return spec


def _build(tmp_path, spec, *extra):
    return CliRunner().invoke(main, ["build", str(spec), "--out", str(tmp_path / "out"),
                                     "--store", str(tmp_path / "store"), "--no-progress", *extra])


def test_each_retry_and_resume_is_one_line_and_the_summary_counts_them(
        hub, tmp_path, fast_retries):
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(os.urandom(3 << 20))
    hub.add_repo("org/flaky-weights", folder)
    hub.fault("*/model.safetensors", "500", times=3)
    hub.fault("*/model.safetensors", "reset", after=1 << 20)

    result = _build(tmp_path, _spec(tmp_path, "org/flaky-weights"))

    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    retries = [ln for ln in lines if ln.startswith("retry: artifact 'weights': model.safetensors")]
    assert len(retries) == 4, result.stderr
    assert all("HTTP 500" in ln for ln in retries[:3])
    assert "attempt 2/7" in retries[0] and "attempt 4/7" in retries[2]
    resumes = [ln for ln in lines if ln.startswith("resume: artifact 'weights': model.safetensors")]
    assert len(resumes) == 1 and "resuming at byte" in resumes[0] and f"of {3 << 20}" in resumes[0]
    summary = result.stdout.strip().splitlines()[-1]
    assert "4 retries" in summary and "resumed" in summary and "0 B resumed" not in summary


def test_quiet_prints_nothing_on_success_even_after_a_retry(hub, tmp_path, fast_retries):
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(os.urandom(1 << 16))
    hub.add_repo("org/quiet-weights", folder)
    hub.fault("*/model.safetensors", "500", times=1)
    quiet = _build(tmp_path, _spec(tmp_path, "org/quiet-weights"), "-q")
    assert quiet.exit_code == 0 and quiet.output == ""


def test_persistent_hub_errors_suggest_hf_endpoint_not_mirror(hub, tmp_path, fast_retries):
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(os.urandom(1 << 16))
    hub.add_repo("org/down-weights", folder)
    hub.fault("*/model.safetensors", "500", times=50)

    result = _build(tmp_path, _spec(tmp_path, "org/down-weights"))

    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: ") and "artifact 'weights'" in error
    assert "HF_ENDPOINT" in error and "--mirror FROM=TO" not in error


def test_an_unreachable_hub_says_what_to_do_next(tmp_path, monkeypatch):
    import socket
    import types

    import builder.sources.hf as hf_source
    from tests.fixtures.hubserver import _point_huggingface_hub_at

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(hf_source, "time", types.SimpleNamespace(sleep=lambda _s: None))
    pointed = _point_huggingface_hub_at(closed)
    next(pointed)
    try:
        result = _build(tmp_path, _spec(tmp_path, "org/anything"))
    finally:
        next(pointed, None)
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()[-1]
    assert f"cannot reach {closed} (the connection was refused)" in error
    assert "HF_ENDPOINT=https://MIRROR" in error and "HTTPS_PROXY" in error


def test_several_failed_artifacts_are_listed_one_per_line(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(textwrap.dedent('''
        [bundle]
        name = "two-bad"
        version = "1.0.0"

        [[artifact]]
        id = "a"
        source = "url"
        url = "https://example.invalid/a.bin"

        [[artifact]]
        id = "b"
        source = "url"
        url = "https://example.invalid/b.bin"
        '''))
    result = _build(tmp_path, spec)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if "2 artifacts failed:" in line)
    assert lines[start] == f"Error: {spec}: 2 artifacts failed:"
    assert lines[start + 1].startswith("  - artifact 'a': field 'sha256' is required")
    assert lines[start + 2].startswith("  - artifact 'b': field 'sha256' is required")
