"""Writing specs without hand-copying: `bundle init --stack NAME` and `bundle add REF`.

Both produce the `[[artifact]]` blocks ``runtime.resolve.spec_snippet`` already prints in
errors (one copy of how a ref becomes a block), pinned where a source states the pin:
a Hub repo's commit when the Hub answers, nothing guessed otherwise. Every write is
checked by loading the whole spec back (``builder.spec.load_spec``) before the file is
replaced, so a spec is never left invalid.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import click

from builder.errors import BuildError


def _hub_commit(repo: str, revision: str = "main") -> str | None:
    """The commit ``revision`` of a Hub repo points at now; None when the Hub cannot say."""
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(repo, revision=revision, timeout=10).sha
    except Exception:  # noqa: BLE001 - offline, gated, unknown: the block stays unpinned
        return None


def artifact_block(ref: str, *, art_id: str | None = None, online: bool = True) -> str:
    """The ``[[artifact]]`` block for ``ref`` (a Hub repo, a timm name, a torchvision
    weights enum, a URL), with the Hub commit pinned when ``online`` and the Hub answers."""
    from runtime.resolve import spec_snippet

    block = spec_snippet(ref)
    if block.startswith("#"):
        raise BuildError(f"{ref!r} looks like an artifact id, not a ref: name a Hub repo "
                         "(ORG/NAME), a timm model (NAME.TAG), a torchvision weights enum "
                         "(ENUM.MEMBER) or a URL")
    if art_id:
        block = re.sub(r'^id = ".*"$', f'id = "{art_id}"', block, count=1, flags=re.M)
    if 'source = "hf"' in block:
        commit = _hub_commit(ref) if online else None
        if commit:
            block = block.replace('revision = "main"',
                                  f'revision = "{commit}"  # main on the Hub when added')
        else:
            block = block.replace('revision = "main"',
                                  'revision = "main"  # not pinned: the Hub did not answer; a '
                                  "build records the commit (bundle ls)")
    if 'source = "url"' in block:
        block = block.replace('sha256 = "<sha256 of the file>"',
                              '# sha256 = "..."  # unknown until downloaded: build once with '
                              "--trust-on-first-use, then copy it from bundle.json")
    return block


def stack_spec(stack_name: str, *, online: bool = True) -> str:
    """A spec for one stack: every artifact its commands may load (its record's needs)."""
    from runtime.stacks import get_stack

    stack = get_stack(stack_name)
    required, optional = stack.roles()
    title = f"{stack.name} offline bundle"
    lines = [
        f"# A bundle for `bundle run {stack.name}`: {stack.summary}.",
        f"#   bundle build THIS_FILE   -> bundles-dist/{stack.name}/",
        "[bundle]",
        f'name = "{stack.name}"',
        'version = "1.0.0"',
        f'title = "{title[:50]}"',
        'license = "other"',
        f'stacks = ["{stack.name}"]',
    ]
    if len(stack.name) < 6:
        lines.append(f'kaggle = "{stack.name}-bundle"  # the Kaggle dataset slug: 6-50 characters')
    if not required and not optional:
        raise BuildError(f"{stack.name} loads nothing from a bundle: `bundle run {stack.name} ...` "
                         "runs without one (strict mode included), so there is no spec to write")
    for role, names in [*required.items(), *optional.items()]:
        what = "needed by its usual run" if role in required else "for another option"
        lines += ["", f"# {role}: {what}", artifact_block(names[0], online=online)]
    return "\n".join(lines) + "\n"


def write_validated(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` only if it loads as a spec (nothing half-written)."""
    from builder.errors import SpecError
    from builder.spec import load_spec

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".toml", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            load_spec(tmp)  # names the field; the file is left as it was
        except SpecError as exc:
            raise SpecError(str(exc).replace(tmp, str(path))) from None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@click.command("init")
@click.option("--stack", "stack_name", required=True, help="The stack the bundle is for (`bundle run --help` lists them).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Spec to write [default: bundles/STACK.toml].")
@click.option("--offline", is_flag=True, help="Do not ask the Hub for commits (revision stays main).")
@click.option("--force", is_flag=True, help="Replace an existing spec.")
def init_command(stack_name: str, out: Path | None, offline: bool, force: bool) -> None:
    """Write a spec with every artifact a stack loads, ready for `bundle build`.

    Hub artifacts are pinned to the commit `main` points at when the Hub answers (else
    left at main, with a comment); url artifacts say how to pin their sha256.

    \b
    Examples:
      bundle init --stack emotion-vit            # -> bundles/emotion-vit.toml
      bundle init --stack ddrm --out my-ddrm.toml --offline
    """
    from builder.errors import SpecError
    from runtime.stacks import UnknownStackError

    out = out or Path("bundles") / f"{stack_name}.toml"
    if out.exists() and not force:
        raise click.ClickException(f"{out} exists; pass --force to replace it, or --out FILE")
    try:
        text = stack_spec(stack_name, online=not offline)
    except (UnknownStackError, BuildError) as exc:
        raise click.ClickException(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_validated(out, text)
    except (SpecError, BuildError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{out}: a spec for {stack_name}; build it with `bundle build {out}`")


@click.command("add")
@click.argument("ref")
@click.option("--spec", "spec_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The spec to add the artifact to.")
@click.option("--id", "art_id", default=None, help="The artifact id [default: from the ref].")
@click.option("--offline", is_flag=True, help="Do not ask the Hub for the commit.")
def add_command(ref: str, spec_path: Path, art_id: str | None, offline: bool) -> None:
    """Append an [[artifact]] block for REF to a spec, checked before it is written.

    REF is a Hub repo (ORG/NAME), a timm model (NAME.TAG), a torchvision weights enum
    (ENUM.MEMBER) or a URL. A Hub repo is pinned to the commit `main` points at now.

    \b
    Examples:
      bundle add google/vit-base-patch16-224 --spec bundles/emotion-vit.toml
      bundle add ResNet18_Weights.IMAGENET1K_V1 --spec bundles/landcover.toml
      bundle add https://example.org/model.pt --spec my.toml --id my-model
    """
    from builder.errors import SpecError

    try:
        block = artifact_block(ref, art_id=art_id, online=not offline)
        text = spec_path.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + block + "\n"
        write_validated(spec_path, text)
    except (SpecError, BuildError) as exc:
        hint = "; choose another with --id NAME" if "duplicate id" in str(exc) else ""
        raise click.ClickException(f"{exc}{hint} (the spec was not changed)") from None
    click.echo(f"{spec_path}: added\n{block}")
