"""``python -m runtime.stacks.NAME [--strict] ...``: a stack run as a module, activated as
``bundle run`` does (also in every rank of a torchrun job)."""

from __future__ import annotations

import sys

import click


def module_main(cli: click.Group, module: str) -> None:
    """``python -m runtime.stacks.NAME [--strict] COMMAND ...``, also under torchrun.

    Parses the command line, then activates the attached bundles as ``bundle run`` does
    (every rank of a torchrun job runs this), strictly with ``--strict`` or with
    ``OFFLINE_BUNDLE_STRICT=1`` in the environment::

        torchrun --nproc_per_node 2 -m runtime.stacks.emotion_vit --strict train --data D --out O
    """
    from runtime import constants
    from runtime.stacks.launch import prepare_run, use_strict
    from runtime.stacks.record import plain_help, registered

    args = sys.argv[1:]
    strict_flag = args[:1] == ["--strict"]
    if strict_flag:
        args = args[1:]
    use_strict(strict_flag)
    stack = next(s for s in registered().values() if s.cli is cli)
    plain_help(cli)
    prog = f"python -m {module} [--strict]"
    try:
        ctx = cli.make_context(prog, list(args))
        act = prepare_run(stack, ctx, args, strict=None, label=f"python -m {module}")
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:  # --help of the group
        sys.exit(e.exit_code)
    if act is not None and constants.rank() == 0:
        mode = "strict offline" if act.strict else "offline"
        click.echo(f"runtime: {len(act.bundles)} bundle(s) attached, {mode}", err=True)
    cli.main(args=args, prog_name=prog)
