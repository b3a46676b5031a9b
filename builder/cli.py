"""The ``bundle`` command line.

A lazy click group: each sub-command is registered as ``"module:attribute"`` and
imported only when it runs, so ``bundle --help`` and ``bundle run`` start fast and
work where only the runtime is installed (a notebook, a container). This module
imports click and the standard library only; every command imports its machinery
inside its body.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from typing import Any

import click

#: command name -> ("module:attribute", one-line help shown by `bundle --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("builder.cli:build_command", "Snapshot every model a spec names into a verified bundle folder."),
    "capture": ("builder.capture:capture_command",
                "Run a command once online; write the spec (and --build the bundle) of what it fetched."),
    "init": ("builder.extras.authoring:init_command",
             "Write a spec with every artifact a stack loads (bundle init --stack NAME)."),
    "add": ("builder.extras.authoring:add_command",
            "Append a checked [[artifact]] block for a Hub repo, timm model, torchvision enum or URL."),
    "from-run": ("builder.runs:from_run_command",
                 "Make a bundle of a training run's outputs (best.pt, weights, metrics) for offline inference."),
    "verify": ("builder.cli:verify_command", "Check every file of a bundle folder against its bundle.json."),
    "ls": ("builder.cli:ls_command", "List the bundles found, or the artifacts of a bundle folder or spec."),
    "publish": ("builder.publish.kaggle:publish_command",
                "Upload a bundle as a Kaggle dataset or Model (--as model); a new version when it changed."),
    "pack": ("builder.publish.pack:pack_command", "Pack a bundle into one archive (e.g. for Colab Drive)."),
    "unpack": ("builder.publish.pack:unpack_command", "Unpack a packed bundle safely (verified, no path escapes)."),
    "image": ("builder.image.command:image_command", "Build a CUDA Docker image that carries a bundle."),
    "store": ("builder.store.command:store_group",
              "What the store holds (ls) and freeing what no bundle uses (prune)."),
    "doctor": ("runtime.cli:doctor_command", "Show the bundles found, missing artifacts, GPU and precision."),
    "run": ("runtime.cli:run_command", "Run a stack command (train, evaluate, predict, ...) offline."),
}


class _Unavailable(click.Command):
    """Stands in for a command whose module cannot be imported; says why when invoked."""

    def __init__(self, name: str, target: str, error: BaseException) -> None:
        super().__init__(name, help=f"(unavailable: {error})", add_help_option=False,
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
        self.target = target
        self.error = error

    def invoke(self, ctx: click.Context) -> Any:
        raise click.ClickException(
            f"`bundle {self.name}` is not available in this installation: cannot import "
            f"{self.target} ({self.error}); install the full tool: pip install 'offline-bundle[build]'"
        )


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.lazy) + [c for c in super().list_commands(ctx) if c not in self.lazy]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        target = self.lazy[cmd_name][0]
        module_name, _, attr = target.partition(":")
        try:
            command = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            return _Unavailable(cmd_name, target, e)
        if not isinstance(command, click.Command):
            return _Unavailable(cmd_name, target, TypeError(f"{target} is not a click command"))
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help from the table above: listing commands must not import them.
        rows = [(name, help_) for name, (_, help_) in self.lazy.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="offline-bundle", prog_name="bundle")
def main() -> None:
    """Snapshot the models a workload needs into a verified bundle; run it offline.

    \b
    Typical use:
      bundle init --stack emotion-vit                # -> bundles/emotion-vit.toml (or use the catalogue's)
      bundle capture -- python my_script.py          # or: the spec of what a script downloads
      bundle build bundles/emotion-vit.toml          # -> ./bundles-dist/emotion-vit/
      bundle verify bundles-dist/emotion-vit
      bundle doctor                                  # bundles found, what each stack would load
      bundle run --strict emotion-vit train --data D --out runs/vit
      bundle publish bundles-dist/emotion-vit        # Kaggle dataset (--as model: a Kaggle Model)
    In a notebook: `import runtime; runtime.activate()`.
    Shell completion: eval "$(_BUNDLE_COMPLETE=bash_source bundle)" (README).
    """


def _fail(message: str) -> None:
    """``Error: MESSAGE`` on stderr (click's own prefix, so every command of ``bundle``
    speaks alike), no traceback, exit 1.

    The whole message: a second line (a list of files, the spec block to add) is
    indented under the first, never dropped.
    """
    lines = message.splitlines() or [""]
    click.echo("\n".join([f"Error: {lines[0]}", *(f"  {ln}" for ln in lines[1:])]), err=True)
    sys.exit(1)


def _run_reporting_errors(fn: Callable[[], Any]) -> Any:
    """Turn the tool's own errors into ``Error: ...`` messages without a traceback."""
    from builder.errors import BuildError
    from runtime.manifest import ManifestError

    try:
        return fn()
    except (BuildError, ManifestError) as e:
        _fail(str(e) or type(e).__name__)
    except KeyboardInterrupt:
        click.echo("interrupted; rerun to resume (downloads are kept in the store)", err=True)
        sys.exit(130)


def parse_size(text: str) -> int:
    """``64MB``, ``1.5GB``, ``512KiB``, ``1000000`` -> bytes (KB/MB/GB are powers of 1024)."""
    import re

    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.I)
    if not m:
        raise ValueError(f"{text!r} is not a size like 64MB or 1GB")
    factor = 1024 ** "_KMGT".index(m.group(2).upper() or "_")
    return int(float(m.group(1)) * factor)


def configure_logging(verbosity: int) -> None:
    """The builder's log lines on stderr: -q (-1) errors only; default (0) warnings, i.e.
    one line per retry and resume; -v (1) also info; -vv (2) debug.

    Lines go above tqdm's progress bars (tqdm.write), not through them.
    """
    import logging

    class LineHandler(logging.Handler):
        offline_bundle = True  # found and replaced by the next call

        def emit(self, record: logging.LogRecord) -> None:
            try:
                message = self.format(record)
                if "tqdm" in sys.modules:
                    from tqdm import tqdm

                    tqdm.write(message, file=sys.stderr)
                else:
                    click.echo(message, err=True)
            except Exception:
                self.handleError(record)

    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logger = logging.getLogger("builder")
    for old in [h for h in logger.handlers if getattr(h, "offline_bundle", False)]:
        logger.removeHandler(old)
    handler = LineHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


# --- build -------------------------------------------------------------------


@click.command("build")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", default="bundles-dist", show_default=True, type=click.Path(file_okay=False),
              help="Folder to write the bundle folder NAME/ into.")
@click.option("--store", "store_dir", type=click.Path(file_okay=False), default=None,
              help="Content-addressed store (default: $OFFLINE_BUNDLE_STORE or ~/.cache/offline-bundle/store).")
@click.option("--jobs", "-j", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Files downloaded in parallel.")
@click.option("--connections", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Connections a large file is fetched over at once, in parts (1: one stream).")
@click.option("--max-connections", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Open connections of the whole build at once (files x parts).")
@click.option("--segment-threshold", default="64MB", show_default=True, metavar="SIZE",
              help="Files of this size or more are fetched in parts (e.g. 64MB, 1GB).")
@click.option("--mirror", "mirrors", multiple=True, metavar="FROM=TO",
              help="Rewrite URLs starting with FROM to start with TO (repeatable).")
@click.option("--allow-http", is_flag=True, help="Allow plain http to non-loopback hosts.")
@click.option("--trust-on-first-use", is_flag=True,
              help="Accept url and local artifacts without pins (sha256, files); record the hashes of what is there now (warns).")
@click.option("--refresh", is_flag=True,
              help="Re-resolve every artifact (e.g. a moved Hub branch) instead of reusing the resolved plan (.NAME.resolved.json).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout.")
@click.option("-v", "--verbose", count=True,
              help="More detail on stderr (-v: each file's steps, -vv: debug).")
@click.option("-q", "--quiet", is_flag=True,
              help="Errors only: no progress bars, no retry/resume lines, no summary line.")
def build_command(
    spec: str, out_dir: str, store_dir: str | None, jobs: int, connections: int,
    max_connections: int, segment_threshold: str, mirrors: tuple[str, ...],
    allow_http: bool, trust_on_first_use: bool, refresh: bool, no_progress: bool, as_json: bool,
    verbose: int, quiet: bool,
) -> None:
    """Build the bundle described by SPEC into OUT/NAME/.

    Resolves every artifact (Hub revision -> commit, torchvision/timm registries),
    downloads each file with retries and resume into the shared store, verifies it
    (sha256, the Hub's LFS sha256 or git id, torch.hub hash prefix), and writes the
    bundle folder by hard links. A rerun of an unchanged spec downloads nothing.

    \b
    Examples:
      bundle build bundles/emotion-vit.toml
      bundle build bundles/ddrm.toml --out /data/bundles --jobs 8
      bundle build spec.toml --mirror https://download.pytorch.org/=https://mirror.corp/pytorch/
      HF_ENDPOINT=https://hf-mirror.example bundle build spec.toml
    """
    from builder.fetch import FetchPolicy, parse_mirrors
    from builder.pipeline import build

    configure_logging(-1 if quiet else verbose)
    try:
        threshold = parse_size(segment_threshold)
    except ValueError as e:
        _fail(f"--segment-threshold: {e}")
    policy = FetchPolicy(connections=connections, max_connections=max_connections,
                         segment_threshold=threshold)
    try:
        pairs = parse_mirrors(mirrors)
    except ValueError as e:
        _fail(str(e))
    report = _run_reporting_errors(lambda: build(
        spec, out_dir=out_dir, store_dir=store_dir, jobs=jobs, mirrors=pairs,
        allow_http=allow_http, trust_on_first_use=trust_on_first_use,
        progress=not no_progress and not as_json and not quiet, refresh=refresh,
        policy=policy,
    ))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    if quiet:
        return
    from runtime.sizes import human_size

    copied = (f"copied {report.copied_files} local file(s), {human_size(report.copied_bytes)}; "
              if report.copied_files else "")
    click.echo(
        f"{report.bundle_dir}: {report.artifacts} artifact(s), {report.files} file(s), "
        f"{human_size(report.size)}; {copied}fetched {report.fetched_files} file(s), "
        f"{human_size(report.fetched_bytes)} in {report.seconds:.2f}s; "
        f"{report.retries} retr{'y' if report.retries == 1 else 'ies'}, "
        f"{human_size(report.resumed_bytes)} resumed"
    )


# --- verify ------------------------------------------------------------------


@click.command("verify")
@click.argument("bundle_dir", type=click.Path(file_okay=False))
@click.option("--quick", is_flag=True, help="Compare sizes only (no hashing).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout.")
@click.option("--no-progress", is_flag=True, help="No byte counter on stderr while hashing.")
def verify_command(bundle_dir: str, quick: bool, as_json: bool, no_progress: bool) -> None:
    """Check every file of BUNDLE_DIR against its bundle.json.

    Exit 0 when every file is present with the right size and sha256 and nothing
    else is there; exit 1 listing each bad, missing or extra file.

    \b
    Examples:
      bundle verify bundles-dist/emotion-vit
      bundle verify /kaggle/input/emotion-vit --quick
    """
    from builder.verify import verify_bundle

    report = _run_reporting_errors(
        lambda: verify_bundle(bundle_dir, quick=quick, progress=not (no_progress or as_json)))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            click.echo(line)
        what = "sizes of" if quick else "sizes and sha256 of"
        status = "OK" if report.ok else f"FAILED: {len(report.lines())} problem(s)"
        click.echo(f"{bundle_dir}: checked {what} {report.files} file(s): {status}",
                   err=not report.ok)
    sys.exit(0 if report.ok else 1)


# --- ls ----------------------------------------------------------------------


def _rows_from_bundle(path: str) -> list[dict[str, Any]]:
    from runtime.manifest import read_manifest

    manifest = read_manifest(path)
    return [
        {"id": a.id, "source": a.source, "ref": a.ref, "revision": a.revision, "commit": a.commit,
         "path": a.path,
         "files": len(a.files), "size": a.size, "fallbacks": list(a.fallbacks)}
        for a in manifest.artifacts
    ]


def _rows_from_spec(path: str) -> list[dict[str, Any]]:
    from builder.sources import get_source
    from builder.spec import load_spec

    spec = load_spec(path)
    rows = []
    for a in spec.artifacts:
        ref = a.get(get_source(a.source).ref_field, "")
        rows.append({"id": a.id, "source": a.source, "ref": ref, "revision": a.get("revision"),
                     "commit": None,
                     "path": None, "files": None, "size": a.size, "fallbacks": list(a.fallbacks)})
    return rows


def _found_bundles() -> list[dict[str, Any]]:
    """The bundles runtime.activate() would attach here, in its search order."""
    from runtime.catalog import attach_all
    from runtime.locate import locate

    bundles, problems = attach_all(locate())
    rows = [{"name": b.name, "version": b.version, "path": str(b.path),
             "artifacts": len(b.manifest.artifacts), "size": b.manifest.size,
             "digest": b.manifest.digest, "problems": [str(p) for p in b.problems]}
            for b in bundles]
    rows += [{"name": None, "version": None, "path": str(p.bundle), "artifacts": 0, "size": 0,
              "digest": None, "problems": [str(p)]} for p in problems if p.kind in ("manifest", "symlink")]
    return rows


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@click.command("ls")
@click.argument("target", type=click.Path(exists=True), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def ls_command(target: str | None, as_json: bool) -> None:
    """List the artifacts of a bundle folder (from its bundle.json) or of a spec; with no
    TARGET, the bundles found here (where `runtime.activate()` looks: $BUNDLE_PATH,
    /kaggle/input, /opt/bundles, Colab Drive, ./bundles-dist).

    \b
    Examples:
      bundle ls                                  # every bundle found
      bundle ls bundles-dist/emotion-vit
      bundle ls bundles/emotion-vit.toml --json
    """
    from pathlib import Path

    from runtime.sizes import human_size

    if target is None:
        found = _found_bundles()
        if as_json:
            click.echo(json.dumps(found, indent=2))
            return
        if not found:
            from runtime.missing import search_roots_brief

            click.echo(f"no bundle found (looked in {search_roots_brief()}); build one with "
                       "`bundle build bundles/NAME.toml` or set BUNDLE_PATH")
            return
        _table([("NAME", "VERSION", "ARTIFACTS", "SIZE", "PATH")] + [
            (r["name"] or "(unreadable)", r["version"] or "-", str(r["artifacts"]),
             human_size(r["size"]), r["path"]) for r in found])
        for r in found:
            for problem in r["problems"]:
                click.echo(f"  problem: {problem}", err=True)
        return
    is_dir = Path(target).is_dir()
    rows = _run_reporting_errors(
        lambda: _rows_from_bundle(target) if is_dir else _rows_from_spec(target)
    )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _table([("ID", "SOURCE", "REF", "REVISION", "COMMIT", "FILES", "SIZE")] + [
        (r["id"], r["source"], r["ref"], r["revision"] or "-", (r["commit"] or "-")[:12],
         "-" if r["files"] is None else str(r["files"]),
         "-" if r["size"] is None else human_size(r["size"])) for r in rows])
    if is_dir and rows:
        total = sum(r["size"] for r in rows)
        click.echo(f"{len(rows)} artifact(s), {human_size(total)}")


if __name__ == "__main__":  # pragma: no cover
    main()
