"""`bundle from-run RUN_DIR`: a training run's outputs as a bundle, for the offline
inference notebook.

The usual Kaggle workflow is two notebooks: one trains, its output becomes a dataset,
and an inference notebook with the internet off loads the trained weights. This makes
that dataset a bundle: one artifact, named like the bundle, holding

    best.pt            the checkpoint (model and config; best.pt keeps no optimiser state):
                       what ``bundle run STACK predict --checkpoint NAME`` loads
    model.safetensors  the same weights, readable without pickle
    backbone/          for the stacks with a Hugging Face backbone: the fine-tuned backbone,
                       save_pretrained (config.json + model.safetensors)
    encoder.pt, generator.pt   what masked-ssl and train-gan write, when the run has them
    metrics.json, summary.json, curves.csv, curves.png, confusion_matrix.*   the reports

and a ``run`` record in bundle.json: the stack, the command line and code version of
the training run, its metrics, and every base bundle it loaded (name, version, digest,
artifact, ref and sha256), taken from the checkpoint's provenance. The bundle names the
run's stack, so its wheels/ hold the runtime as any stack bundle's do.

It is built the way every bundle is: the exported files are written to
``OUT/.NAME.run/`` with a spec beside them (``source = "local"``, every file pinned),
and ``bundle build`` makes the bundle from that spec, store and all.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import click

from builder.errors import BuildError
from builder.sources.local import pin_of

#: checkpoints that identify a run folder, in the order they are looked for
RUN_CHECKPOINTS = ("best.pt", "generator.pt")
#: other outputs a run bundle carries when the run has them
RUN_FILES = ("encoder.pt", "metrics.json", "summary.json", "gan_summary.json", "curves.csv",
             "curves.png", "confusion_matrix.csv", "confusion_matrix.png", "loss_parts.csv",
             "loss_parts.png")
_NAME_RE = re.compile(r"[^a-z0-9-]+")


def default_name(stack: str, run_dir: Path) -> str:
    """``STACK-RUNFOLDER``, as a bundle name may be spelled ([a-z0-9-])."""
    tail = _NAME_RE.sub("-", run_dir.resolve().name.lower()).strip("-")
    name = f"{stack}-{tail}" if tail and tail != stack else stack + "-run"
    return name[:50].strip("-")


def _toml(value: Any) -> str:
    """A TOML value (inline) for plain JSON-like data."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}"
                                for k, v in value.items() if v is not None) + " }"
    return json.dumps(str(value))


def _base_bundles(config: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per role of the checkpoint's provenance that came from a bundle."""
    block = config.get("provenance")
    records = block.items() if isinstance(block, dict) else []
    bases = []
    for role, record in records:
        if not isinstance(record, dict):
            continue
        files = record.get("files") or []
        main = max(files, key=lambda f: f.get("size") or 0, default=None)
        entry: dict[str, Any] = {"role": str(role)}
        if "bundle" in record:
            bundle, artifact = record["bundle"], record.get("artifact") or {}
            entry.update({"bundle": bundle.get("name"), "version": bundle.get("version"),
                          "digest": bundle.get("digest"), "artifact": artifact.get("id"),
                          "ref": record.get("ref")})
        elif "local" in record:
            entry["local"] = Path(str(record["local"])).name
        if main is not None:
            entry.update({"file": main.get("path"), "sha256": main.get("sha256")})
        bases.append(entry)
    return bases


def _export_backbone(state: dict[str, Any], config: dict[str, Any], folder: Path) -> bool:
    """``backbone/``: the fine-tuned Hugging Face backbone, save_pretrained. False when the
    checkpoint has none (its config holds no ``backbone_config``)."""
    backbone_config = config.get("backbone_config")
    if not isinstance(backbone_config, dict) or "model_type" not in backbone_config:
        return False
    from transformers import AutoConfig, AutoModel

    hf_config = AutoConfig.for_model(**backbone_config)
    prefix = "backbone."
    weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if not weights:
        return False
    model = AutoModel.from_config(hf_config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if "pooler" not in k]:
        raise BuildError(f"the checkpoint's backbone does not fit {hf_config.model_type} "
                         f"({len(missing)} missing, {len(unexpected)} unexpected weights)")
    model.save_pretrained(folder)
    return True


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint that makes ``run_dir`` a run folder.

    Raises:
        BuildError: not a folder, or none of RUN_CHECKPOINTS in it.
    """
    if not run_dir.is_dir():
        raise BuildError(f"{run_dir}: not a folder; pass the --out folder of `bundle run STACK train`")
    checkpoint = next((run_dir / n for n in RUN_CHECKPOINTS if (run_dir / n).is_file()), None)
    if checkpoint is None:
        raise BuildError(f"{run_dir}: no {' or '.join(RUN_CHECKPOINTS)}; pass the --out folder "
                         "of `bundle run STACK train` (or of train-gan)")
    return checkpoint


def export_run(run_dir: Path, checkpoint: Path, staging: Path) -> dict[str, Any]:
    """Write the run's bundle files into ``staging/model/``; the ``run`` record for bundle.json.

    Raises:
        BuildError: a checkpoint that cannot be read, or that names no stack.
    """
    from safetensors.torch import save_file

    from runtime.errors import CheckpointError
    from runtime.train.checkpoint import read_checkpoint

    try:
        state = read_checkpoint(checkpoint)
    except CheckpointError as e:
        raise BuildError(str(e)) from None
    config = state.get("config") or {}
    stack = config.get("stack")
    if not isinstance(stack, str) or not stack:
        raise BuildError(f"{checkpoint}: its config names no stack; it was not written by "
                         "`bundle run STACK train`")
    model_dir = staging / "model"
    model_dir.mkdir(parents=True)
    shutil.copy2(checkpoint, model_dir / checkpoint.name)
    tensors = {k: v.detach().contiguous().clone() for k, v in state["model"].items()}
    save_file(tensors, str(model_dir / "model.safetensors"),
              metadata={"stack": stack, "checkpoint": checkpoint.name})
    _export_backbone(state, config, model_dir / "backbone")
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, model_dir / name)
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("offline-bundle")
    except PackageNotFoundError:
        ours = "unknown"
    trained = state.get("run") or {}
    run = {
        "stack": stack,
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": pin_of(checkpoint),
        "epoch": state.get("epoch"),
        "metrics": {k: v for k, v in (state.get("metrics") or {}).items()
                    if isinstance(v, (int, float))},
        "command": trained.get("command"),
        "offline_bundle": trained.get("offline_bundle"),
        "python": trained.get("python"),
        "torch": trained.get("torch"),
        "started": trained.get("started"),
        "exported_by": ours,
        "base": _base_bundles(config),
    }
    return {k: v for k, v in run.items() if v is not None}


def write_run_spec(staging: Path, *, name: str, version: str, run: dict[str, Any],
                   title: str | None = None) -> Path:
    """The spec of the run bundle: one local folder artifact, every file pinned, and [run]."""
    model_dir = staging / "model"
    stack = run["stack"]
    pins = {p.relative_to(model_dir).as_posix(): pin_of(p)
            for p in sorted(model_dir.rglob("*")) if p.is_file()}
    lines = [
        f"# The outputs of a `bundle run {stack}` training run, written by bundle from-run.",
        "[bundle]",
        f"name = {_toml(name)}",
        f"version = {_toml(version)}",
        f"title = {_toml((title or f'{name} trained model')[:50])}",
        f"stacks = {_toml([stack])}",
    ]
    if len(name) < 6:
        lines.append(f"kaggle = {_toml(name + '-run')}")
    lines += [
        "",
        "[[artifact]]",
        f"id = {_toml(name)}",
        'source = "local"',
        'path = "model"',
        f"files = {_toml(pins)}",
        f"description = {_toml(stack + ' run: the checkpoint and its exported weights')}",
        "",
        "[run]",
    ]
    for key, value in run.items():
        if key != "base":
            lines.append(f"{key} = {_toml(value)}")
    if not run.get("base"):
        lines.append("base = []  # the run loaded no bundle (trained from scratch)")
    for base in run.get("base", []):
        lines += ["", "[[run.base]]"] + [f"{k} = {_toml(v)}" for k, v in base.items() if v is not None]
    spec = staging / f"{name}.toml"
    spec.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return spec


def from_run(run_dir: str | Path, *, out_dir: str | Path, name: str | None = None,
             version: str | None = None, store_dir: str | Path | None = None,
             progress: bool = True) -> Any:
    """Export ``run_dir`` and build its bundle into ``out_dir/NAME/``; the BuildReport.

    ``version`` defaults to the checkpoint's time (``YYYY.MMDD.HHMMSS``, UTC), so a
    new run of the same name is a new version.
    """
    from builder.pipeline import build
    from builder.spec import NAME_RE

    run_dir = Path(run_dir)
    checkpoint = run_checkpoint(run_dir)
    if name is not None and not NAME_RE.match(name):
        raise BuildError(f"--name {name!r}: a bundle name is [a-z0-9-], starting with a letter or digit")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Exported into a scratch folder first: a failed export leaves nothing behind.
    staging = out / ".from-run-staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        run = export_run(run_dir, checkpoint, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    name = name or default_name(run["stack"], run_dir)
    if version is None:
        stamp = _dt.datetime.fromtimestamp(checkpoint.stat().st_mtime, tz=_dt.timezone.utc)
        version = stamp.strftime("%Y.%m%d.%H%M%S")
    final = out / f".{name}.run"
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    spec = write_run_spec(final, name=name, version=version, run=run)
    report = build(spec, out_dir=out, store_dir=store_dir, progress=progress)
    return report, spec


@click.command("from-run")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", default=None,
              help="Bundle (and artifact) name [default: STACK-RUNFOLDER]; --checkpoint takes it.")
@click.option("--version", "version", default=None,
              help="Bundle version [default: YYYY.MMDD.HHMMSS of the checkpoint, UTC].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("bundles-dist"), show_default=True, help="Folder to write NAME/ into.")
@click.option("--store", "store_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Content-addressed store (default: $OFFLINE_BUNDLE_STORE or the user cache).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON on stdout.")
def from_run_command(run_dir: Path, name: str | None, version: str | None, out_dir: Path,
                     store_dir: Path | None, no_progress: bool, as_json: bool) -> None:
    """Make a bundle of a training run's outputs, for the offline inference notebook.

    RUN_DIR is the --out folder of `bundle run STACK train`. The bundle holds one artifact,
    named like the bundle: best.pt, its weights as model.safetensors (and, for the emotion
    stacks, the fine-tuned backbone as a save_pretrained folder), the run's metrics and
    curves; bundle.json records the training command, the code version and the base
    bundles (name, digest, artifact, sha256) the run loaded. Publish it like any bundle;
    in the inference notebook pass its name as --checkpoint.

    \b
    Example:
      bundle run emotion-vit train --data /kaggle/input/deam --out runs/vit
      bundle from-run runs/vit --name emotion-vit-deam      # -> bundles-dist/emotion-vit-deam/
      bundle publish bundles-dist/emotion-vit-deam
      # inference notebook, internet off, both bundles attached:
      bundle run --strict emotion-vit predict --checkpoint emotion-vit-deam songs/ --format csv
    """
    from runtime.sizes import human_size

    try:
        report, spec = from_run(run_dir, out_dir=out_dir, name=name, version=version,
                                store_dir=store_dir, progress=not no_progress)
    except BuildError as e:
        raise click.ClickException(str(e)) from None
    except ImportError as e:
        raise click.ClickException(
            f"bundle from-run reads the checkpoint with torch and exports its weights with "
            f"safetensors (and transformers, for a Hugging Face backbone); {e.name or e} is not "
            "installed: pip install 'offline-bundle[build,stacks]'") from None
    if as_json:
        click.echo(json.dumps({**report.to_json(), "spec": str(spec)}, indent=2))
        return
    click.echo(f"{report.bundle_dir}: run bundle {report.name} {report.version}, "
               f"{report.files} file(s), {human_size(report.size)} (spec: {spec}); "
               f"--checkpoint {report.name} loads it")
