"""``bundle capture -- COMMAND``: run a workload once online; get its spec (and bundle).

The pieces: :mod:`builder.capture.run` (environment, child process, store import,
writing), :mod:`builder.capture.reconcile` (log + caches -> what was fetched),
:mod:`builder.capture.spec_writer` (the spec text). The recorder itself lives in
the runtime (runtime.netlog, started by runtime/_site/sitecustomize.py), because it
runs inside the user's processes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from builder.capture.reconcile import Capture


@click.command(
    "capture",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--name", default=None, help="Bundle name [default: from the script the command runs].")
@click.option("--spec-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the spec [default: bundles/NAME.toml]; NAME.capture.json "
                   "(the record of the run) goes next to it.")
@click.option("--build", "do_build", is_flag=True,
              help="Then build the bundle, from what the run fetched (nothing is downloaded twice).")
@click.option("--out", "out_dir", default="bundles-dist", show_default=True,
              type=click.Path(file_okay=False), help="Where --build puts the bundle folder.")
@click.option("--store", "store_dir", default=None, type=click.Path(file_okay=False),
              help="Content-addressed store [default: $OFFLINE_BUNDLE_STORE or the user cache].")
@click.option("--mirror", "mirrors", multiple=True, metavar="FROM=TO",
              help="Rewrite URL prefixes for the run's urllib/requests downloads (torch.hub, "
                   "torchvision) and for --build; the spec keeps the original URLs.")
@click.option("--allow-http", is_flag=True, help="--build may use plain http to non-loopback hosts.")
@click.option("--force", is_flag=True, help="Replace an existing spec file.")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the run's private caches and its network log in this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the capture record as JSON on stdout.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def capture_command(name: str | None, spec_out: Path | None, do_build: bool, out_dir: str,
                    store_dir: str | None, mirrors: tuple[str, ...], allow_http: bool, force: bool,
                    keep: Path | None, as_json: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND once with the network on and write the spec of what it fetched.

    Every library cache of COMMAND points at a fresh private folder (so nothing
    cached on this machine hides a need) and every Python process of it records its
    downloads: each Hub file (repo, commit, file, sha256), each torch.hub checkpoint
    (matched to its torchvision weights enum or timm tag), each other HTTP(S) file.
    The spec pins them all (commits, sha256, only the files used); what a spec
    cannot hold (API calls, failed requests, downloads by curl or native code) is
    listed at the end with what to do. COMMAND's exit code is passed through.

    Your Hugging Face token, if any, reaches COMMAND as HF_TOKEN in its environment
    only: never the spec, the record or the bundle.

    \b
    Examples:
      bundle capture -- python train.py --epochs 1
      bundle capture --name my-model --build -- python infer.py images/
      bundle capture --mirror https://download.pytorch.org/=https://mirror.corp/pt/ -- python x.py
    Then, offline:
      BUNDLE_PATH=bundles-dist bundle run --strict -- python infer.py images/
    """
    from builder.capture.run import run_capture, write_outputs
    from builder.capture.spec_writer import bundle_name
    from builder.errors import CaptureError
    from builder.fetch import parse_mirrors
    from runtime import constants

    argv = list(command)
    try:
        pairs = parse_mirrors(mirrors)
    except ValueError as e:
        _fail(str(e))
    name = name or bundle_name(argv)
    spec_out = spec_out or Path("bundles") / f"{name}.toml"
    if spec_out.exists() and not force:
        _fail(f"{spec_out} exists; pass --force to replace it, or --spec-out elsewhere")
    store = Path(store_dir).expanduser() if store_dir else constants.store_dir()
    def echo(text: str) -> None:
        click.echo(text, err=True)

    try:
        run = run_capture(argv, store_dir=store, mirrors=pairs, keep=keep, echo=echo)
    except CaptureError as e:
        _fail(str(e))
    capture = run.capture
    _report(run.returncode, capture, run.seconds, echo)
    if as_json:
        click.echo(json.dumps({"command": argv, "exit_code": run.returncode, **capture.to_json()}, indent=2))
    if capture.empty:
        echo(f"bundle capture: the command fetched nothing a spec can hold ({capture.requests} HTTP "
             f"request(s) recorded); no spec written.")
        sys.exit(run.returncode)
    try:
        spec_path, record_path = write_outputs(run, name=name, spec_out=spec_out, force=force)
    except (CaptureError, ValueError) as e:
        _fail(str(e))
    except Exception as e:  # SpecError, CredentialError: ours, with the file named
        _fail(f"{type(e).__name__}: {e}")
    echo(f"wrote {spec_path} and {record_path}; {run.stored} file(s) are in the store {store}")
    if run.returncode != 0:
        echo(f"bundle capture: COMMAND FAILED (exit {run.returncode}): the spec holds what it "
             "fetched before that and may be incomplete; not building.")
        sys.exit(run.returncode)
    if do_build:
        from builder.errors import BuildError
        from builder.pipeline import build
        from runtime.manifest import ManifestError

        try:
            report = build(spec_path, out_dir=out_dir, store_dir=store, mirrors=pairs,
                           allow_http=allow_http, progress=False)
        except (BuildError, ManifestError) as e:
            _fail(f"{e} (the spec is written: fix it and run bundle build {spec_path})")
        echo(f"built {report.bundle_dir}: {report.artifacts} artifact(s), {report.files} file(s); "
             f"downloaded again: {report.fetched_files} file(s)")
        echo(f"next, offline: BUNDLE_PATH={out_dir} bundle run --strict -- {' '.join(argv)}")
    else:
        echo(f"next: bundle build {spec_path} --out {out_dir}, then offline: "
             f"BUNDLE_PATH={out_dir} bundle run --strict -- {' '.join(argv)}")
    sys.exit(run.returncode)


def _fail(message: str) -> None:
    """``Error: MESSAGE`` on stderr, no traceback, exit 1."""
    raise click.ClickException(message)


def _report(returncode: int, capture: Capture, seconds: float, echo) -> None:  # type: ignore[no-untyped-def]
    from builder.layout import human_size

    echo(f"bundle capture: the command exited with {returncode} after {seconds:.1f}s; "
         f"{capture.requests} HTTP request(s) from {capture.processes} process(es)")
    for h in capture.hub:
        size = sum(f.size for f in h.files)
        kind = f"timm {h.timm_model}" if h.timm_model else "hf"
        echo(f"  {kind:<28} {h.repo_id}@{h.commit[:12]}: {len(h.files)} file(s), {human_size(size)}")
    for c in capture.checkpoints:
        what = c.weights or (f"timm {c.timm_model}" if c.timm_model else c.url or "(source unknown)")
        echo(f"  {'torch.hub':<28} {c.file.name}: {what}, {human_size(c.file.size)}")
    for u in capture.urls:
        echo(f"  {'url':<28} {u.url}: {human_size(u.size)}")
    if capture.problems:
        echo("not in the spec (a spec cannot hold these):")
        for p in capture.problems:
            echo(f"  - {p.what}: {p.why}. {p.todo[:1].upper()}{p.todo[1:]}.")
