"""Strict mode: no connection leaves the machine, loopback keeps working, errors say why."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import runtime
from runtime import constants
from runtime.guard import is_local_host
from tests.test_runtime_support import hf_art, make_bundle


@pytest.fixture
def strict(tmp_path, monkeypatch):
    bundle = make_bundle(tmp_path / "b", "b", [hf_art("vit-tiny", "org/vit-tiny", {"config.json": b"{}"})])
    monkeypatch.setenv(constants.ENV_BUNDLE_PATH, str(bundle))
    monkeypatch.setenv(constants.ENV_SEARCH_ROOTS, "")
    monkeypatch.delenv(constants.ENV_ALLOW_HOSTS, raising=False)
    yield runtime.activate(strict=True)
    runtime.deactivate()


@pytest.mark.parametrize("host, local", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("localhost", True), ("LOCALHOST.", True), ("api.localhost", True), ("0.0.0.0", True),
    ("", True), (None, True),
    ("8.8.8.8", False), ("2606:4700::1111", False), ("huggingface.co", False),
    ("192.168.1.5", False), ("::ffff:8.8.8.8", False), ("<broadcast>", False),
])
def test_only_loopback_counts_as_local(host, local):
    assert is_local_host(host) is local


def test_allowed_hosts_are_let_through(monkeypatch):
    assert is_local_host("metrics.internal", frozenset({"metrics.internal"}))


def test_strict_mode_keeps_loopback_servers_reachable(strict, tmp_path):
    class Hello(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        for host in ("127.0.0.1", "localhost"):
            with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as reply:
                assert reply.read() == b"hello"
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket(socket.AF_UNIX) as unix:  # unix sockets never leave the machine
        unix.bind(str(tmp_path / "s"))


def test_strict_mode_refuses_public_addresses_and_deactivate_lifts_it(strict):
    # 192.0.2.0/24 is a documentation range; resolving an IP literal does no I/O.
    with pytest.raises(runtime.OfflineViolation, match=r"192\.0\.2\.1:443") as err:
        socket.getaddrinfo("192.0.2.1", 443)
    assert err.value.host == "192.0.2.1" and err.value.port == 443
    assert not isinstance(err.value, OSError)  # so HTTP clients do not retry it
    runtime.deactivate()
    assert socket.getaddrinfo("192.0.2.1", 443)


def test_strict_mode_in_a_network_namespace_names_host_and_missing_artifact(tmp_path):
    """The guard's real job, where even a broken guard could not leak: no interface but lo."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to create a network namespace")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
    bundle = make_bundle(tmp_path / "b", "b", [hf_art("vit-tiny", "org/vit-tiny", {"config.json": b"{}"})])
    child = r'''
import json, os, socket, urllib.request
import runtime
out = {"interfaces": sorted(name for _, name in socket.if_nameindex())}
runtime.activate(strict=True)

def attempt(name, call):
    try:
        call()
        out[name] = "connected"
    except runtime.OfflineViolation as e:
        out[name] = "OfflineViolation: " + str(e)
    except Exception as e:
        out[name] = f"{type(e).__name__}: {e}"

attempt("socket", lambda: socket.create_connection(("1.1.1.1", 443), timeout=2))
attempt("urllib", lambda: urllib.request.urlopen(
    "https://download.pytorch.org/models/vit_b_16-c867db91.pth", timeout=2))
import huggingface_hub
from huggingface_hub import constants, hf_hub_download
constants.HF_HUB_OFFLINE = False  # code that forces itself online despite activate()
attempt("hub", lambda: hf_hub_download("google/vit-base-patch16-224", "config.json"))
print("RESULT " + json.dumps(out))
'''
    env = {**os.environ, "BUNDLE_PATH": str(bundle), "OFFLINE_BUNDLE_SEARCH_ROOTS": "",
           "HF_HOME": str(tmp_path / "hf_home")}
    # The session's Hub stand-in (HF_ENDPOINT, loopback) would answer; this child must
    # believe it talks to huggingface.co, as a user's notebook does.
    env.pop("HF_ENDPOINT", None)
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", child], env=env,
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"child failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    out = json.loads(lines[-1][len("RESULT "):])

    assert out["interfaces"] == ["lo"]
    assert out["socket"].startswith("OfflineViolation: ") and "1.1.1.1:443" in out["socket"]
    assert out["urllib"].startswith("OfflineViolation: ")
    assert "download.pytorch.org" in out["urllib"]
    assert 'weights = "' in out["urllib"] or "vit_b_16-c867db91.pth" in out["urllib"]
    hub = out["hub"]
    assert "OfflineViolation" in hub and "huggingface.co" in hub
    assert "'google/vit-base-patch16-224'" in hub  # the artifact it wanted
    assert "org/vit-tiny" in hub  # what the bundle holds
    assert 'repo = "google/vit-base-patch16-224"' in hub  # how to add it


def test_strict_mode_survives_a_later_plain_activate(strict):
    # `bundle run --strict` activates strictly; the stack then calls activate() itself.
    assert runtime.activate() is strict and strict.strict
    with pytest.raises(runtime.OfflineViolation):
        socket.getaddrinfo("192.0.2.1", 443)


def test_strict_mode_lets_this_machine_look_up_its_own_name(strict):
    try:
        socket.getaddrinfo(socket.gethostname(), None)
    except socket.gaierror:
        pass  # no entry in /etc/hosts: the lookup itself was allowed, which is the point


def test_strict_activate_with_no_bundle_raises_naming_the_search_roots_used(tmp_path, monkeypatch):
    import warnings

    import runtime
    from runtime.errors import NoBundleError, NoBundleWarning

    monkeypatch.setenv("BUNDLE_PATH", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("OFFLINE_BUNDLE_SEARCH_ROOTS", str(tmp_path / "input/*"))
    with pytest.raises(NoBundleError) as err:
        runtime.activate(strict=True)
    assert str(tmp_path / "nothing-here") in str(err.value)
    # The roots in brief (the folder each pattern starts from); bundle doctor lists them all.
    assert f"{tmp_path / 'input'}; `bundle doctor -v` lists every place" in str(err.value)
    assert "require_bundle=False" in str(err.value) and "OFFLINE_BUNDLE_REQUIRE_BUNDLE=0" in str(err.value)
    assert runtime.current() is None  # nothing was activated
    # With the built-in roots (28 patterns under /kaggle/input, and four more places) too.
    monkeypatch.delenv("OFFLINE_BUNDLE_SEARCH_ROOTS")
    with pytest.raises(NoBundleError) as err:
        runtime.activate(strict=True)
    assert "/kaggle/input, /opt/bundles, /content/drive/MyDrive/bundles, ./bundles-dist" in str(err.value)
    assert len(str(err.value)) < 800
    monkeypatch.setenv("OFFLINE_BUNDLE_SEARCH_ROOTS", str(tmp_path / "input/*"))
    # The documented switches keep the old behaviour: a warning, then strict offline.
    for kwargs, env in (({"require_bundle": False}, None), ({}, "0")):
        if env is not None:
            monkeypatch.setenv("OFFLINE_BUNDLE_REQUIRE_BUNDLE", env)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            act = runtime.activate(strict=True, **kwargs)
        assert act.strict and any(issubclass(w.category, NoBundleWarning) for w in caught)
        runtime.deactivate()
