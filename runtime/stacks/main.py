"""``python -m runtime.stacks.NAME [--strict] ...``: a stack run as a module, activated as
``bundle run`` does (also in every rank of a torchrun job)."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import click


def activate_reporting(runtime: Any, strict: bool, require_bundle: bool | None = None) -> Any:
    """activate(), its warnings as one line each on stderr (not Python's file:line format)."""
    from runtime.errors import BundleIntegrityError, NoBundleError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            act = runtime.activate(strict=strict, require_bundle=require_bundle)
        except (NoBundleError, BundleIntegrityError) as e:
            raise click.ClickException(str(e)) from None
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    return act


def module_main(cli: click.Group, module: str) -> None:
    """``python -m runtime.stacks.NAME [--strict] COMMAND ...``, also under torchrun.

    Activates the attached bundles first, as ``bundle run`` does (every rank of a
    torchrun job runs this), strictly with ``--strict`` or with
    ``OFFLINE_BUNDLE_STRICT=1`` in the environment::

        torchrun --nproc_per_node 2 -m runtime.stacks.emotion_vit --strict train --data D --out O
    """
    from runtime import constants

    args = sys.argv[1:]
    if args[:1] == ["--strict"]:
        args = args[1:]
        os.environ[constants.ENV_STRICT] = "1"  # data-loader workers and children too
    if args and not {"--help", "-h"} & set(args):
        import runtime
        from runtime.stacks import stack_needs

        required, optional, _any = stack_needs(sys.modules["__main__"])
        try:
            # A stack that loads nothing from a bundle (masked-ssl) runs strict without one.
            act = activate_reporting(runtime, constants.env_flag(constants.ENV_STRICT),
                                      require_bundle=None if required or optional else False)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        if os.environ.get("RANK", "0") == "0":
            mode = "strict offline" if act.strict else "offline"
            click.echo(f"runtime: {len(act.bundles)} bundle(s) attached, {mode}", err=True)
    cli.main(args=args, prog_name=f"python -m {module} [--strict]")
