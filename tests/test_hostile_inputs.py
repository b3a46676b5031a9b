"""Hostile inputs: specs, Hub answers and servers that try to write outside the bundle,
slip a newline past a validator, keep a download retrying forever, or reach the
network past strict mode. Each must fail safely, with one clear line.

Real local servers throughout (the Hub stand-in, the fault-injecting file server).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main
from builder.errors import BuildError, FetchError, SpecError
from builder.spec import load_spec

HEAD = '[bundle]\nname = "hostile"\nversion = "1.0.0"\n\n'
#: the `bundle` command of this very interpreter (not whichever is first on PATH)
BUNDLE_CLI = [sys.executable, "-c", "from builder.cli import main; main()"]


def spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def build_cli(tmp_path: Path, spec: Path, *extra: str):
    return CliRunner().invoke(main, ["build", str(spec), "--out", str(tmp_path / "out"),
                                     "--store", str(tmp_path / "store"), "--no-progress", *extra])


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# --- 1. path traversal through `revision` -------------------------------------------


@pytest.mark.parametrize("revision", [
    "../../../../../ESCAPED", "a/../../../../ESCAPED2", "..", "main\\n", "a b", "x:y",
    "/abs", "trailing/", "dot.", ".hidden", "ref.lock", "a//b", "@", "x@{1}", "back\\\\slash",
])
def test_a_revision_git_would_refuse_is_a_spec_error_and_nothing_is_written(
        hub, tmp_path, revision):
    before = files_under(tmp_path)
    spec = spec_file(tmp_path, HEAD + textwrap.dedent(f'''
        [[artifact]]
        id = "m"
        source = "hf"
        repo = "org/anything"
        revision = "{revision}"
        '''))
    mark = len(hub.requests)

    result = build_cli(tmp_path, spec)

    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line and "artifact 'm'" in line and "field 'revision'" in line, line
    assert "Traceback" not in result.output
    assert hub.requests[mark:] == []  # refused before any server was asked
    # Nothing written anywhere: no out folder, no store, nothing beside --out.
    assert files_under(tmp_path) == before | {"spec.toml"}
    assert not (tmp_path.parent / "ESCAPED").exists()


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "release-2024.01", "a" * 40])
def test_revisions_git_accepts_pass_the_spec(tmp_path, revision):
    spec = spec_file(tmp_path, HEAD + textwrap.dedent(f'''
        [[artifact]]
        id = "m"
        source = "hf"
        repo = "org/anything"
        revision = "{revision}"
        '''))
    assert load_spec(spec).artifacts[0].get("revision") == revision


def test_a_timm_revision_is_checked_the_same_way(tmp_path):
    spec = spec_file(tmp_path, HEAD + textwrap.dedent('''
        [[artifact]]
        id = "t"
        source = "timm"
        model = "mobilevit_xxs.cvnets_in1k"
        revision = "../../x"
        '''))
    with pytest.raises(SpecError, match=r"artifact 't': field 'revision'"):
        load_spec(spec)


def test_a_hostile_revision_that_bypasses_the_spec_is_refused_at_plan_time(hub, tmp_path):
    """timm's registry or another caller can hand plan_hub_repo a revision: same rule there."""
    from builder.sources.hf import plan_hub_repo

    hub.add_repo_files("org/plan-time", {"config.json": b"{}"})
    mark = len(hub.requests)
    with pytest.raises(BuildError, match=r"artifact 'p'.*'\.\./\.\./ESCAPED'"):
        plan_hub_repo("p", "org/plan-time", revision="../../ESCAPED")
    assert hub.requests[mark:] == []
    with pytest.raises(BuildError, match="refs/"):
        plan_hub_repo("p", "org/plan-time", ref_name="../../ESCAPED")


@pytest.mark.parametrize("name", ["../escape.json", "a/../../escape.json", "sub\\..\\x.json",
                                  "new\nline.json", "nul\x00.json"])
def test_a_hub_file_name_that_would_leave_the_bundle_fails_the_build_naming_it(
        hub, tmp_path, name):
    repo = f"org/hostile-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    hub.add_repo_files(repo, {"config.json": b"{}", name: b"payload"})
    spec = spec_file(tmp_path, HEAD + f'[[artifact]]\nid = "h"\nsource = "hf"\nrepo = "{repo}"\n')

    result = build_cli(tmp_path, spec)

    assert result.exit_code == 1
    assert "artifact 'h'" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "out" / "hostile").exists()
    assert not list(tmp_path.parent.glob("escape*"))
    assert not list(tmp_path.glob("**/escape.json"))


def test_every_write_into_a_bundle_checks_its_path(tmp_path):
    from builder import layout

    staging = tmp_path / "staging"
    staging.mkdir()
    for rel in ("../outside", "a/../../outside", "/abs", "a//b", "x\\y", "n\nl"):
        with pytest.raises(BuildError, match="refusing to write"):
            layout.write_bytes(staging, rel, b"x")
    assert not (tmp_path / "outside").exists()
    assert list(staging.iterdir()) == []


# --- 2. validators and a trailing newline ---------------------------------------------


@pytest.mark.parametrize("field, spec_text", [
    ("name", '[bundle]\nname = "demo\\n"\nversion = "1.0.0"\n'),
    ("version", '[bundle]\nname = "demo"\nversion = "1.0.0\\n"\n'),
    ("kaggle", '[bundle]\nname = "demo"\nversion = "1.0.0"\nkaggle = "o/demo\\n"\n'),
    ("id", HEAD + '[[artifact]]\nid = "x\\n"\nsource = "hf"\nrepo = "org/name"\n'),
    ("repo", HEAD + '[[artifact]]\nid = "x"\nsource = "hf"\nrepo = "org/name\\n"\n'),
    ("sha256", HEAD + '[[artifact]]\nid = "x"\nsource = "url"\nurl = "https://e.com/a"\n'
               f'sha256 = "{"0" * 64}\\n"\n'),
    ("weights", HEAD + '[[artifact]]\nid = "x"\nsource = "torchvision"\n'
                'weights = "ViT_B_16_Weights.IMAGENET1K_V1\\n"\n'),
])
def test_a_trailing_newline_fails_validation_in_one_line(tmp_path, field, spec_text):
    spec = spec_file(tmp_path, spec_text)
    result = build_cli(tmp_path, spec)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert line.startswith("Error: ") and f"field '{field}'" in line, line
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


# --- 3. file names in the spec ----------------------------------------------------------


@pytest.mark.parametrize("filename", ["a\\u0000b", "..\\\\..\\\\x", "new\\nline", "..", "a/b", ""])
def test_a_filename_with_nul_backslash_newline_or_slash_is_a_spec_error(tmp_path, filename):
    spec = spec_file(tmp_path, HEAD + textwrap.dedent(f'''
        [[artifact]]
        id = "u"
        source = "url"
        url = "https://example.com/model.bin"
        sha256 = "{"0" * 64}"
        filename = "{filename}"
        '''))
    result = build_cli(tmp_path, spec)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "artifact 'u'" in line and "field 'filename'" in line and "\n" not in line, line


@pytest.mark.parametrize("last_segment", ["a%00b", "a%0Ab", "..%5C..%5Cx"])
def test_a_url_whose_name_decodes_to_something_unsafe_needs_a_filename(tmp_path, last_segment):
    spec = spec_file(tmp_path, HEAD + textwrap.dedent(f'''
        [[artifact]]
        id = "u"
        source = "url"
        url = "https://example.com/{last_segment}"
        sha256 = "{"0" * 64}"
        '''))
    with pytest.raises(SpecError, match="artifact 'u': field 'filename' is required"):
        load_spec(spec)


# --- 4. a retry loop that never ends ------------------------------------------------------


def test_a_server_that_restarts_every_response_and_drops_it_gives_up_after_the_retries(
        fresh_file_server, tmp_path):
    """Content-Length says 8 MiB, 4 KiB arrive, the connection closes, and a Range request
    gets a 200 from byte 0 again: no attempt gets further than the first, so after the
    documented retries the fetch stops with a clear error."""
    from builder.fetch import FetchPolicy, fetch
    from builder.store import Store

    data = os.urandom(8 << 20)
    url = fresh_file_server.add("/endless.bin", data)
    fresh_file_server.fault("/endless.bin", "truncate", times=1000, after=4096, ignore_range=True)
    policy = FetchPolicy(retries=3, backoff=0.01, backoff_max=0.02)

    with pytest.raises(FetchError) as err:
        fetch([url], Store(tmp_path / "store"), sha256=hashlib.sha256(data).hexdigest(),
              size=len(data), policy=policy, label="artifact 'e': endless.bin")

    gets = fresh_file_server.gets("/endless.bin")
    # The first GET gets 4 KiB (progress); then one GET without new bytes and its
    # retries: 2 + retries in all, where the loop used to go on for ever.
    assert len(gets) == 2 + policy.retries
    message = str(err.value)
    assert "artifact 'e'" in message and "no new bytes" in message and "furthest: 4096" in message
    assert [p for p in (tmp_path / "store" / "blobs").rglob("*") if p.is_file()] == []


def test_progress_counts_only_bytes_beyond_the_furthest_point(fresh_file_server, tmp_path):
    """A cut that leaves more each time is progress: the download still completes."""
    from builder.fetch import FetchPolicy, fetch
    from builder.store import Store

    data = os.urandom(3 << 20)
    url = fresh_file_server.add("/creeping.bin", data)
    for after in (1 << 20, 1 << 20, 1 << 20):  # each resumes and gets 1 MiB further
        fresh_file_server.fault("/creeping.bin", "truncate", after=after)
    result = fetch([url], Store(tmp_path / "store"), sha256=hashlib.sha256(data).hexdigest(),
                   size=len(data), policy=FetchPolicy(retries=1, backoff=0.01), label="c")
    assert result.path.read_bytes() == data


# --- 5. strict guard gaps ------------------------------------------------------------------


STRICT_CHILD = r'''
import socket, sys
import runtime
from runtime.errors import OfflineViolation
runtime.activate(strict=True, require_bundle=False)
results = {}
def attempt(name, fn):
    try:
        fn()
        results[name] = "passed"
    except OfflineViolation as e:
        results[name] = "refused" if e.host else "refused-no-host"
    except OSError:
        results[name] = "os-error"
attempt("gethostbyaddr", lambda: socket.gethostbyaddr("93.184.216.34"))
attempt("getnameinfo", lambda: socket.getnameinfo(("93.184.216.34", 80), 0))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attempt("sendmsg", lambda: udp.sendmsg([b"\x00" * 12], [], 0, ("10.255.255.1", 53)))
attempt("sendto", lambda: udp.sendto(b"\x00", ("10.255.255.1", 53)))
attempt("connect", lambda: socket.create_connection(("10.255.255.1", 80), timeout=0.5))
attempt("gethostbyname", lambda: socket.gethostbyname("example.com"))
attempt("getaddrinfo", lambda: socket.getaddrinfo("example.com", 443))
# Loopback stays allowed.
attempt("loopback-sendmsg", lambda: udp.sendmsg([b"x"], [], 0, ("127.0.0.1", 9)))
attempt("loopback-nameinfo", lambda: socket.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST))
print(results)
'''


def test_strict_mode_refuses_every_socket_event_that_can_leave_the_machine(tmp_path):
    env = {**os.environ, "BUNDLE_PATH": "", "OFFLINE_BUNDLE_SEARCH_ROOTS": ""}
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", STRICT_CHILD],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    results = eval(proc.stdout.strip().splitlines()[-1])
    for name in ("gethostbyaddr", "getnameinfo", "sendmsg", "sendto", "connect",
                 "gethostbyname", "getaddrinfo"):
        assert results[name] == "refused", (name, results)
    assert results["loopback-sendmsg"] == "passed"
    assert results["loopback-nameinfo"] == "passed"


def _netns_unavailable() -> str | None:
    probe = subprocess.run([sys.executable, "-c", "from runtime.netns import isolate; isolate()"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return "this system refuses network namespaces: " + probe.stderr.strip().splitlines()[-1]
    return None


def test_no_network_puts_child_processes_outside_the_network_too(tmp_path, file_server):
    """What the in-process guard cannot see (a child process) cannot reach a server
    either: under --no-network the test's own file server on 127.0.0.1 (outside the
    namespace) is unreachable, and only the loopback interface exists."""
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    url = file_server.add("/netns-probe.txt", b"reachable")
    probe = (f"import socket, urllib.request\n"
             f"print(sorted(n for _, n in socket.if_nameindex()))\n"
             f"try:\n    urllib.request.urlopen({url!r}, timeout=3); print('reached')\n"
             f"except OSError as e:\n    print('unreachable')\n")
    env = {**os.environ, "BUNDLE_PATH": "", "OFFLINE_BUNDLE_SEARCH_ROOTS": ""}
    proc = subprocess.run(
        [*BUNDLE_CLI, "run", "--no-network", "--",
         sys.executable, "-c", probe],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["['lo']", "unreachable"]
    assert "private network namespace" in proc.stderr
    # Outside --no-network the same probe reaches the server: the test can fail.
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           env=env, timeout=60)
    assert "reached" in plain.stdout


def test_run_passes_a_commands_exit_code_through_and_marks_children_strict(tmp_path):
    env = {**os.environ, "BUNDLE_PATH": "", "OFFLINE_BUNDLE_SEARCH_ROOTS": ""}
    env.pop("OFFLINE_BUNDLE_STRICT", None)
    no_bundle = subprocess.run([*BUNDLE_CLI, "run", "--strict", "--", sys.executable, "-c", "0"],
                               capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert no_bundle.returncode == 1 and "no bundle is attached" in no_bundle.stderr
    assert "Traceback" not in no_bundle.stderr
    env["OFFLINE_BUNDLE_REQUIRE_BUNDLE"] = "0"  # the documented switch: a warning instead
    child = "import os, sys; print(os.environ['OFFLINE_BUNDLE_STRICT'], os.environ['HF_HUB_OFFLINE']); sys.exit(7)"
    proc = subprocess.run(
        [*BUNDLE_CLI, "run", "--strict", "--", sys.executable, "-c", child],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 7 and proc.stdout.split() == ["1", "1"], proc.stderr
    missing = subprocess.run(
        [*BUNDLE_CLI, "run", "--", "no-such-command-xyz"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert missing.returncode == 1 and "command not found: 'no-such-command-xyz'" in missing.stderr


# --- 6. the two verifies agree -------------------------------------------------------------


def test_runtime_verify_and_bundle_verify_report_the_same_symlink_and_extra_file(tmp_path):
    import runtime
    from tests.test_runtime_support import hf_art, make_bundle

    bundle = make_bundle(tmp_path / "b", "agree", [hf_art("m", "org/m", {"config.json": b"{}"})])
    snapshot = next((bundle / "hf").rglob("config.json")).parent
    (snapshot / "planted.py").write_text("print('not listed')\n")
    os.symlink("/etc/hostname", bundle / "hf" / "link")

    cli = CliRunner().invoke(main, ["verify", str(bundle)])
    report = runtime.verify(paths=[bundle], progress=False)

    assert cli.exit_code == 1 and not report.ok
    extra = snapshot.relative_to(bundle).as_posix() + "/planted.py"
    assert f"extra    {extra}" in cli.output and "symlink  hf/link" in cli.output
    found = {(p.kind, p.path) for p in report.problems}
    assert ("extra", extra) in found and ("symlink", "hf/link") in found
    assert runtime.verify(paths=[bundle], quick=False, progress=False).ok is False


def test_runtime_verify_reports_a_bundle_activate_refuses_for_its_symlinked_folder(tmp_path):
    import runtime
    from tests.test_runtime_support import hf_art, make_bundle

    bundle = make_bundle(tmp_path / "b", "linked", [hf_art("m", "org/m", {"config.json": b"{}"})])
    snapshot = next((bundle / "hf").rglob("config.json")).parent
    elsewhere = tmp_path / "elsewhere"
    snapshot.rename(elsewhere)
    os.symlink(elsewhere, snapshot)

    report = runtime.verify(paths=[bundle], progress=False)
    assert not report.ok and [p.kind for p in report.problems] == ["symlink"]


# --- 7. a same-size tamper and activate(verify="full") ------------------------------------


def _tampered_bundle(tmp_path: Path) -> tuple[Path, Path]:
    from tests.test_runtime_support import hf_art, make_bundle

    bundle = make_bundle(tmp_path / "b", "tamper", [
        hf_art("m", "org/tamper", {"config.json": b'{"model_type": "vit"}',
                                  "model.safetensors": b"A" * 4096})])
    weights = next((bundle / "hf").rglob("model.safetensors"))
    weights.write_bytes(b"B" * 4096)  # same size: the quick check cannot see it
    return bundle, weights


def test_a_same_size_tamper_passes_the_quick_check_and_fails_the_full_one(tmp_path):
    import runtime
    from runtime.errors import BundleIntegrityError
    from tests.fixtures.bundles import activated

    bundle, weights = _tampered_bundle(tmp_path)
    with activated(bundle, strict=False) as act:
        assert act.ok and act.verified == "quick"  # what docs/runtime.md says quick misses

    os.environ["BUNDLE_PATH"], os.environ["OFFLINE_BUNDLE_SEARCH_ROOTS"] = str(bundle), ""
    cache_before = os.environ.get("HF_HUB_CACHE")
    try:
        with pytest.raises(BundleIntegrityError) as err:
            runtime.activate(verify="full")
        assert runtime.current() is None  # nothing was activated
        assert os.environ.get("HF_HUB_CACHE") == cache_before
        message = str(err.value)
        assert str(weights) in message and "artifact 'm'" in message and "sha256" in message
        assert [p.kind for p in err.value.problems] == ["sha256"]
        with pytest.raises(ValueError, match="quick.*full"):
            runtime.activate(verify="fast")
    finally:
        runtime.deactivate()
        for key in ("BUNDLE_PATH", "OFFLINE_BUNDLE_SEARCH_ROOTS"):
            os.environ.pop(key, None)


def test_offline_bundle_verify_full_refuses_a_tampered_bundle_in_a_fresh_process(tmp_path):
    bundle, weights = _tampered_bundle(tmp_path)
    env = {**os.environ, "BUNDLE_PATH": str(bundle), "OFFLINE_BUNDLE_SEARCH_ROOTS": "",
           "OFFLINE_BUNDLE_VERIFY": "full"}
    child = ("import runtime\ntry:\n    runtime.activate()\nexcept runtime.BundleIntegrityError as e:"
             "\n    print('REFUSED', len(e.problems))\nelse:\n    print('LOADED')\n")
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.stdout.strip() == "REFUSED 1", proc.stderr
    weights.write_bytes(b"A" * 4096)  # restored: the same process start now activates
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.stdout.strip() == "LOADED", proc.stderr


# --- 8. smaller items ------------------------------------------------------------------------


def test_deeply_nested_toml_is_a_spec_error_not_a_recursion_traceback(tmp_path):
    spec = spec_file(tmp_path, HEAD + "x = " + "[" * 50_000 + "]" * 50_000 + "\n")
    result = build_cli(tmp_path, spec)
    assert result.exit_code == 1 and "nested too deeply" in result.stderr
    assert "Traceback" not in result.output


def test_deeply_nested_bundle_json_is_a_manifest_error(tmp_path):
    from runtime.manifest import ManifestError, read_manifest

    (tmp_path / "bundle.json").write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(ManifestError, match="nested too deeply"):
        read_manifest(tmp_path)


def test_a_build_that_fails_validation_creates_nothing(tmp_path):
    spec = spec_file(tmp_path, HEAD + textwrap.dedent(f'''
        [[artifact]]
        id = "plain"
        source = "url"
        url = "http://example.com/model.bin"
        sha256 = "{"0" * 64}"
        '''))
    result = build_cli(tmp_path, spec)
    assert result.exit_code == 1 and "refusing plain http" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


def test_an_error_of_several_lines_is_printed_whole(tmp_path):
    from builder.cli import _run_reporting_errors

    def fail():
        raise BuildError("first line\nsecond line names the file")

    runner = CliRunner()
    import click

    @click.command()
    def cmd():
        _run_reporting_errors(fail)

    result = runner.invoke(cmd)
    assert result.exit_code == 1
    assert result.stderr == "Error: first line\n  second line names the file\n"


@pytest.mark.parametrize("field, text, words", [
    ("stacks", '[bundle]\nname = "demo"\nversion = "1.0.0"\nstacks = ["../../x"]\n',
     ["field 'stacks'", "'../../x'"]),
    ("requirements", HEAD + '[wheels]\nrequirements = ["--index-url=http://evil.example/simple"]\n',
     ["field 'requirements'", "not a requirement"]),
    ("id", HEAD + f'[[artifact]]\nid = "{"a" * 300}"\nsource = "hf"\nrepo = "org/name"\n',
     ["field 'id'", "at most 128"]),
    ("filename", HEAD + '[[artifact]]\nid = "u"\nsource = "url"\nurl = "https://e.com/a"\n'
     f'sha256 = "{"0" * 64}"\nfilename = "{"f" * 300}"\n', ["field 'filename'", "255 bytes"]),
])
def test_names_that_become_paths_or_pip_options_are_checked(tmp_path, field, text, words):
    """A stack name becomes notebooks/STACK.ipynb, an id a folder, a requirement a pip argument."""
    with pytest.raises(SpecError) as err:
        load_spec(spec_file(tmp_path, text))
    for word in words:
        assert word in str(err.value)
