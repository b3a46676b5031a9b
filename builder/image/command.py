"""`bundle image`: the command line of :func:`builder.image.build.build_image`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from builder.errors import BuildError
from builder.image.build import (
    DEFAULT_BASE_IMAGE,
    LABEL_DIGEST,
    LABEL_NAME,
    LABEL_VERSION,
    build_image,
    default_tag,
)
from builder.image.context import write_context
from runtime.sizes import human_size

# --- CLI ---------------------------------------------------------------------


@click.command("image")
@click.argument("bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--tag", "-t", help="Image tag (default NAME:VERSION from bundle.json).")
@click.option(
    "--base-image",
    help=f"FROM image (default {DEFAULT_BASE_IMAGE}); used as is when local, pulled only when missing.",
)
@click.option(
    "--platform", help="Target platform, e.g. linux/amd64 (smoke check skipped when foreign)."
)
@click.option("--push", is_flag=True, help="Push the tag after the smoke check passes.")
@click.option(
    "--context-only",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the build context to this folder and stop (no Docker needed).",
)
@click.option(
    "--runtime-wheel",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Install this offline_bundle-*.whl instead of building one from the source tree.",
)
@click.option(
    "--dockerfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Another Dockerfile with the same context layout (default Dockerfile.gpu).",
)
@click.option(
    "--no-wheelhouse", is_flag=True, help="Do not install the packages of the bundle's wheels/."
)
@click.option(
    "--no-smoke", is_flag=True, help="Skip the offline `bundle doctor` run of the new image."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No build output on stderr.")
def image_command(
    bundle_dir: Path,
    tag: str | None,
    base_image: str | None,
    platform: str | None,
    push: bool,
    context_only: Path | None,
    runtime_wheel: Path | None,
    dockerfile: Path | None,
    no_wheelhouse: bool,
    no_smoke: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Bake BUNDLE_DIR and the runtime into a CUDA Docker image that runs offline.

    Builds Dockerfile.gpu with the Docker engine at DOCKER_HOST from a minimal
    context (the bundle's listed files, the runtime wheels; never credentials),
    then runs `bundle doctor --json` in the image with no network.

    \b
    Examples:
      bundle image bundles-dist/emotion-vit
      bundle image bundles-dist/emotion-vit --tag ghcr.io/me/emotion-vit:1.0.0 --push
      bundle image bundles-dist/emotion-vit --base-image pytorch/pytorch:2.14.1-cuda12.8-cudnn9-runtime
      bundle image bundles-dist/emotion-vit --context-only /tmp/ctx   # then docker build elsewhere
      docker run --gpus all --network none emotion-vit:1.0.0 bundle run emotion-vit predict --help
    """
    try:
        if context_only is not None:
            context = write_context(
                bundle_dir,
                context_only,
                dockerfile=dockerfile,
                runtime_wheel=runtime_wheel,
                install_wheelhouse=not no_wheelhouse,
                base_image=base_image,
            )
            args = " ".join(
                f"--build-arg {k}={_shell_quote(v)}" for k, v in context.buildargs.items()
            )
            result = {
                "context": str(context_only),
                "size": context.size,
                "buildargs": context.buildargs,
                "runtime_wheel": context.runtime_wheel_origin,
                "command": f"docker build {args} -t {tag or default_tag(context.bundle_name, context.bundle_version)} {context_only}",
            }
            if as_json:
                click.echo(json.dumps(result, indent=2))
            else:
                click.echo(
                    f"wrote the build context of {context.bundle_name} {context.bundle_version} "
                    f"to {context_only} ({human_size(context.size)}); build it with:\n  {result['command']}"
                )
            return
        report = build_image(
            bundle_dir,
            tag=tag,
            base_image=base_image,
            platform=platform,
            push=push,
            smoke=not no_smoke,
            runtime_wheel=runtime_wheel,
            dockerfile=dockerfile,
            install_wheelhouse=not no_wheelhouse,
            progress=not quiet,
        )
    except (BuildError, OSError) as e:  # ImageError, RuntimeWheelError
        raise click.ClickException(" ".join(str(e).split())) from None
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    click.echo(
        f"built {', '.join(report.tags) or report.image_id}  {report.image_id}  {human_size(report.size)}"
    )
    for key in (LABEL_NAME, LABEL_VERSION, LABEL_DIGEST):
        click.echo(f"  {key}={report.labels.get(key, '')}")
    if report.smoke:
        n = len(report.smoke["artifacts_present"])
        click.echo(
            f"  smoke check (--network none, bundle doctor): bundle found, {n} artifact(s) present"
        )
    for t in report.pushed:
        click.echo(f"  pushed {t}")


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)
