"""No credential reaches a written file: specs refuse user:password URLs, signed URLs are
written redacted, spec headers come from the environment, and publish / pack / image
scan every byte they send for this machine's secrets.

Real servers: the fault-injecting file server (which checks a signed URL's query as S3
does) and the Kaggle API stand-in. Every produced file is searched for every secret.
"""

from __future__ import annotations

import json
import os
import textwrap
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main
from builder.errors import SpecError
from builder.spec import load_spec
from tests.test_kaggle import make_bundle

SIG, CRED, TOK, MIRSIG = ("sigSECRET0123456789", "credSECRET0123456789", "tokSECRET0123456789",
                          "mirrorsigSECRET0123456789")
HEADER_TOKEN = "Bearer hdrSECRET0123456789"
SIGNED_QUERY = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={CRED}&X-Amz-Date=20261207T000000Z"
                f"&X-Amz-Expires=3600&X-Amz-Signature={SIG}&token={TOK}&response-content-type=bin")
SECRETS = [SIG, CRED, TOK, MIRSIG, "hdrSECRET0123456789"]


def every_file(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def leaks(blobs: dict[str, bytes], secrets: list[str] = SECRETS) -> list[tuple[str, str]]:
    return [(name, s) for name, data in blobs.items() for s in secrets if s.encode() in data]


# --- the spec refuses credentials in URLs, and takes headers from the environment ----------


@pytest.mark.parametrize("field, value", [
    ("url", "https://alice:hunter2hunter2@example.com/model.pt"),
    ("url", "https://tokenonly@example.com/model.pt"),
    ("mirrors", ["https://bob:hunter2hunter2@mirror.example.com/model.pt"]),
])
def test_a_url_with_user_and_password_is_refused_and_the_error_says_how_to_pass_it(
        tmp_path, field, value):
    spec = tmp_path / "s.toml"
    url = value if field == "url" else "https://example.com/model.pt"
    mirrors = f"mirrors = {json.dumps(value)}\n" if field == "mirrors" else ""
    spec.write_text(f'[bundle]\nname = "creds"\nversion = "1"\n\n[[artifact]]\nid = "ckpt"\n'
                    f'source = "url"\nurl = "{url}"\nsha256 = "{"0" * 64}"\n{mirrors}')
    result = CliRunner().invoke(main, ["build", str(spec), "--out", str(tmp_path / "out"),
                                       "--store", str(tmp_path / "store")])
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert str(spec) in line and "artifact 'ckpt'" in line and f"field '{field}'" in line
    assert 'headers = { Authorization = "env:MY_TOKEN" }' in line
    assert "hunter2" not in result.output and "tokenonly" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("headers, words", [
    ('{ Authorization = "Bearer abc123abc123" }', ["field 'headers'", "env:VARIABLE"]),
    ('{ Authorization = "env:1BAD" }', ["field 'headers'", "env:VARIABLE"]),
    ('{ "Bad Header" = "env:X" }', ["field 'headers'", "not an HTTP header name"]),
    ('"Authorization: x"', ["field 'headers' must be a table"]),
])
def test_spec_headers_must_name_an_environment_variable(tmp_path, headers, words):
    spec = tmp_path / "s.toml"
    spec.write_text(f'[bundle]\nname = "creds"\nversion = "1"\n\n[[artifact]]\nid = "ckpt"\n'
                    f'source = "url"\nurl = "https://e.com/m.pt"\nsha256 = "{"0" * 64}"\n'
                    f"headers = {headers}\n")
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    for word in words:
        assert word in str(err.value)
    assert "abc123abc123" not in str(err.value)


def test_an_unset_header_variable_fails_before_anything_is_created(tmp_path, monkeypatch):
    monkeypatch.delenv("OB_UNSET_TOKEN", raising=False)
    spec = tmp_path / "s.toml"
    spec.write_text(f'[bundle]\nname = "creds"\nversion = "1"\n\n[[artifact]]\nid = "ckpt"\n'
                    f'source = "url"\nurl = "https://e.com/m.pt"\nsha256 = "{"0" * 64}"\n'
                    'headers = { Authorization = "env:OB_UNSET_TOKEN" }\n')
    result = CliRunner().invoke(main, ["build", str(spec), "--out", str(tmp_path / "out"),
                                       "--store", str(tmp_path / "store")])
    assert result.exit_code == 1
    assert "artifact 'ckpt': field 'headers'" in result.stderr and "OB_UNSET_TOKEN" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


# --- a signed URL with a header: built, rebuilt, packed, imaged, published ------------------


@pytest.fixture
def signed_build(fresh_file_server, tmp_path, monkeypatch):
    """A bundle built from a signed URL (+ a header from the environment and a signed
    mirror on another host name), with what the server saw and where everything is."""
    data = b"checkpoint bytes " * 4096
    import hashlib

    server = fresh_file_server
    server.add("/signed/ckpt.pt", data)
    server.require_query("/signed/ckpt.pt", SIGNED_QUERY)
    server.add("/mirror/ckpt.pt", data)
    server.require_query("/mirror/ckpt.pt", f"sig={MIRSIG}")
    primary = f"{server.url}/signed/ckpt.pt?{SIGNED_QUERY}"
    mirror = f"http://localhost:{server.port}/mirror/ckpt.pt?sig={MIRSIG}"
    monkeypatch.setenv("OB_TEST_TOKEN", HEADER_TOKEN)
    spec = tmp_path / "signed.toml"
    spec.write_text(textwrap.dedent(f'''
        [bundle]
        name = "signed-url"
        version = "1.0.0"
        description = "a bundle from a signed URL"

        [[artifact]]
        id = "ckpt"
        source = "url"
        url = "{primary}"
        mirrors = ["{mirror}"]
        sha256 = "{hashlib.sha256(data).hexdigest()}"
        headers = {{ Authorization = "env:OB_TEST_TOKEN" }}
        '''))
    out, store = tmp_path / "out", tmp_path / "store"
    args = ["build", str(spec), "--out", str(out), "--store", str(store), "--no-progress", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return {"server": server, "spec": spec, "out": out, "store": store, "args": args,
            "bundle": out / "signed-url", "primary": primary, "build_output": result.output,
            "data": data}


def test_a_signed_url_is_fetched_whole_and_written_nowhere(signed_build):
    b = signed_build
    gets = b["server"].gets("/signed/ckpt.pt")
    assert len(gets) == 1 and gets[0].headers.get("Authorization") == HEADER_TOKEN
    assert (b["bundle"] / "files/ckpt/ckpt.pt").read_bytes() == b["data"]
    # Not in the bundle, the lock, the build's JSON report or anything else under --out.
    assert leaks(every_file(b["out"])) == []
    assert leaks({"bundle build --json": b["build_output"].encode()}) == []
    manifest = json.loads((b["bundle"] / "bundle.json").read_text())
    (art,) = manifest["artifacts"]
    assert "X-Amz-Signature=***" in art["ref"] and "token=***" in art["ref"]  # marked redacted
    assert "X-Amz-Expires=***" in art["ref"] and "response-content-type=bin" in art["ref"]
    assert f"{b['server'].url}/signed/ckpt.pt" in art["aliases"]


def test_a_rebuild_finds_the_file_by_sha256_and_refetches_from_the_specs_url(signed_build):
    b = signed_build
    again = CliRunner().invoke(main, b["args"])
    assert again.exit_code == 0 and json.loads(again.stdout)["fetched_files"] == 0
    assert len(b["server"].gets("/signed/ckpt.pt")) == 1  # from the store: no request
    # The blob is gone: the lock holds only the redacted URL, the spec the real one.
    for blob in (b["store"] / "blobs").rglob("*"):
        if blob.is_file():
            blob.unlink()
    refetch = CliRunner().invoke(main, b["args"])
    assert refetch.exit_code == 0, refetch.output
    gets = b["server"].gets("/signed/ckpt.pt")
    assert len(gets) == 2 and gets[1].headers.get("Authorization") == HEADER_TOKEN
    assert leaks(every_file(b["out"])) == []


def test_spec_headers_go_to_the_urls_own_host_only(signed_build):
    """The primary refuses (403): the mirror, another host, is tried, without the token."""
    b = signed_build
    for blob in (b["store"] / "blobs").rglob("*"):
        if blob.is_file():
            blob.unlink()
    b["server"].fault("/signed/ckpt.pt", "404")
    result = CliRunner().invoke(main, b["args"])
    assert result.exit_code == 0, result.output
    (mirror_get,) = b["server"].gets("/mirror/ckpt.pt")
    assert "Authorization" not in mirror_get.headers
    assert leaks(every_file(b["out"])) == []


def test_runtime_resolve_finds_a_signed_url_artifact_by_its_url(signed_build):
    import runtime
    from tests.fixtures.bundles import activated

    with activated(signed_build["bundle"], strict=True):
        path = runtime.resolve(signed_build["primary"])
        assert path.read_bytes() == signed_build["data"]


def test_the_packed_archive_and_the_image_context_hold_no_secret(signed_build, tmp_path):
    from builder.image.command import image_command

    bundle = signed_build["bundle"]
    archive = tmp_path / "signed.zip"
    packed = CliRunner().invoke(main, ["pack", str(bundle), "--zip", "--out", str(archive)])
    assert packed.exit_code == 0, packed.output
    with zipfile.ZipFile(archive) as z:
        members = {n: z.read(n) for n in z.namelist()}
    assert leaks({"archive": archive.read_bytes(), **members}) == []
    ctx = tmp_path / "ctx"
    made = CliRunner().invoke(image_command, [str(bundle), "--context-only", str(ctx)])
    assert made.exit_code == 0, made.output
    assert leaks(every_file(ctx)) == []


def test_what_kaggle_receives_holds_no_secret(signed_build, kaggle_env):
    result = CliRunner().invoke(main, ["publish", str(signed_build["bundle"]),
                                       "--dataset", "tester/signed-url"])
    assert result.exit_code == 0, result.output
    received = {f"upload {i}": data for i, data in enumerate(kaggle_env.uploads)}
    received |= {f"call {i} {c.method}": json.dumps(c.body, default=str).encode()
                 for i, c in enumerate(kaggle_env.calls)}
    assert kaggle_env.uploads and leaks(received) == []


# --- defense in depth: publish, pack and image refuse this machine's secrets -----------------


PLANTED_HF = "hf_PLANTEDtoken0123456789abcdef"
PLANTED_ENV = "envPLANTEDsecret0123456789"
PLANTED_KAGGLE = "kagglePLANTEDkey0123456789abcdef"


def _planted_bundle(tmp_path: Path, secret: str) -> Path:
    """A bundle one of whose files holds `secret` (e.g. a config saved with a token in it)."""
    snap = "hf/models--org--tiny/snapshots/" + "c" * 40
    return make_bundle(tmp_path, {
        f"{snap}/config.json": json.dumps({"model_type": "vit", "hub_token": secret}).encode(),
        f"{snap}/model.safetensors": os.urandom(2048),
    })


@pytest.mark.parametrize("where, secret, kind", [
    ("hf-token-file", PLANTED_HF, "the Hugging Face token"),
    ("env", PLANTED_ENV, "the value of $OB_SERVICE_SECRET"),
    ("kaggle-json", PLANTED_KAGGLE, "the Kaggle API key"),
    ("userinfo", "https://bob:hunter2hunter2@example.com/x", "a URL with user:password"),
])
def test_publish_pack_and_image_refuse_a_bundle_that_holds_a_secret_of_this_machine(
        kaggle_env, tmp_path, monkeypatch, where, secret, kind):
    from builder.image.command import image_command

    home = Path(os.environ["HOME"])  # kaggle_env made a private HOME
    if where == "hf-token-file":
        (home / ".cache" / "huggingface").mkdir(parents=True)
        (home / ".cache" / "huggingface" / "token").write_text(PLANTED_HF + "\n")
        monkeypatch.delenv("HF_HOME", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    elif where == "env":
        monkeypatch.setenv("OB_SERVICE_SECRET", PLANTED_ENV)
    elif where == "kaggle-json":
        monkeypatch.setenv("KAGGLE_KEY", PLANTED_KAGGLE)  # the same key, as kaggle.json
        (home / ".kaggle").mkdir(exist_ok=True)
        (home / ".kaggle" / "kaggle.json").write_text(
            json.dumps({"username": "tester", "key": PLANTED_KAGGLE}))
    bundle = _planted_bundle(tmp_path, secret)
    config = next(bundle.rglob("config.json"))

    published = CliRunner().invoke(main, ["publish", str(bundle)])
    packed = CliRunner().invoke(main, ["pack", str(bundle), "--out", str(tmp_path / "p.zip")])
    imaged = CliRunner().invoke(image_command, [str(bundle), "--context-only", str(tmp_path / "c")])

    for result, action in ((published, "nothing was published"), (packed, "nothing was packed"),
                           (imaged, "no image was built")):
        assert result.exit_code == 1, result.output
        assert str(config) in result.output or config.relative_to(bundle).as_posix() in result.output
        assert kind in result.output and action in result.output
        assert secret not in result.output and "Traceback" not in result.output
    assert not kaggle_env.uploads and "CreateDataset" not in kaggle_env.methods()
    assert not (tmp_path / "p.zip").exists() and not (tmp_path / "c").exists()


def test_the_scan_needs_the_secret_itself_not_a_look_alike(kaggle_env, tmp_path, monkeypatch):
    """A short or unrelated value never blocks a publish: the scan is for this machine's secrets."""
    monkeypatch.setenv("OB_SHORT_KEY", "abc")  # under the minimum length: ignored
    bundle = _planted_bundle(tmp_path, "abc and hf_NOTthetoken0123456789")
    result = CliRunner().invoke(main, ["publish", str(bundle)])
    assert result.exit_code == 0, result.output


def test_a_private_index_url_with_a_password_is_refused_pointing_at_pip_s_variables(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[bundle]\nname = "creds"\nversion = "1"\n\n[wheels]\n'
                    'index_url = "https://me:hunter2hunter2@pypi.example.com/simple"\n')
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    assert "field 'index_url'" in str(err.value) and "PIP_INDEX_URL" in str(err.value)
    assert "hunter2" not in str(err.value)
