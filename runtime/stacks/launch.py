"""Starting a stack run: parse its command line, know what it loads, then activate the bundles.

``bundle run STACK COMMAND ...`` and ``python -m runtime.stacks.NAME COMMAND ...`` (in
every rank of a torchrun job) both go through :func:`prepare_run`:

1. the command line is parsed as click will parse it, so a usage error is shown before
   anything else happens;
2. the stack's record says what this command, with these options, loads
   (:meth:`~runtime.stacks.record.Stack.uses`);
3. ``runtime.activate()`` runs. When the run loads nothing from a bundle (``flood train
   --task segment``, any ``evaluate`` or ``predict`` from a checkpoint), strict mode
   without a bundle is fine. When it loads something, a missing bundle or artifact
   stops it here in one message naming the artifacts, the catalogue spec that builds
   them and where bundles were looked for.

Imports click and the standard library; ``runtime`` itself only when activating.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import click

from runtime.stacks.record import Stack, Use

_HELP = frozenset({"--help", "-h"})


def use_strict(flag: bool) -> bool:
    """The one owner of the strict setting of a launch: ``--strict`` (``bundle run``,
    ``python -m runtime.stacks.NAME``) sets ``$OFFLINE_BUNDLE_STRICT=1``, so torchrun's
    ranks, data-loader workers and child processes inherit it; ``activate()`` then reads
    it (flag -> environment -> guard). Returns whether this launch is strict."""
    import os

    from runtime import constants

    if flag:
        os.environ[constants.ENV_STRICT] = "1"
    return constants.env_flag(constants.ENV_STRICT)


def planned_uses(stack: Stack, ctx: click.Context, args: Sequence[str]) -> list[Use] | None:
    """What ``args`` (``COMMAND [OPTIONS]``) will load; None when click answers alone
    (``--help``, no or an unknown command), so nothing needs activating.

    Raises:
        click.UsageError: the command's options do not parse (shown with its usage line).
    """
    if _HELP & set(args) or not args or args[0].startswith("-"):
        return None
    command = stack.cli.get_command(ctx, args[0])
    if command is None:
        return None
    with command.make_context(args[0], list(args[1:]), parent=ctx) as sub:
        params = dict(sub.params)
    return stack.uses(args[0], params)


def _activate(*, strict: bool | None, require_bundle: bool | None) -> tuple[Any, list[Any]]:
    """``runtime.activate()`` and the warnings it gave; its errors as one-line CLI errors."""
    import runtime
    from runtime.errors import BundleIntegrityError, NoBundleError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            act = runtime.activate(strict=strict, require_bundle=require_bundle)
        except (NoBundleError, BundleIntegrityError) as e:
            raise click.ClickException(str(e)) from None
    return act, list(caught)


def activate_reporting(*, strict: bool | None, require_bundle: bool | None = None) -> Any:
    """``runtime.activate()``, its warnings as one line each on stderr (not Python's
    file:line format), its errors as one-line CLI errors."""
    act, caught = _activate(strict=strict, require_bundle=require_bundle)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    return act


def prepare_run(stack: Stack, ctx: click.Context, args: Sequence[str], *,
                strict: bool | None, label: str) -> Any:
    """Parse ``args``, then activate the bundles as the run needs them; the Activation,
    or None when click answers alone (``--help``).

    Args:
        stack: the stack's record.
        ctx: the context of the stack's group (``stack.cli.make_context(...)``).
        args: ``COMMAND [OPTIONS]`` as typed.
        strict: refuse the network (None: ``$OFFLINE_BUNDLE_STRICT``).
        label: how the user started it, for messages (``bundle run flood``).

    Raises:
        click.UsageError: bad options. click.ClickException: the run loads something and
        no bundle, or no attached bundle, holds it (one message says what and where).
    """
    uses = planned_uses(stack, ctx, args)
    if uses is None:
        return None
    from runtime.errors import NoBundleWarning
    from runtime.train.checkpoint import note_command

    note_command([*label.split(), *args])  # what checkpoints record as the run's command

    act, caught = _activate(strict=strict, require_bundle=False)
    for w in caught:
        # No bundle: a run that loads nothing need not hear it; one that loads something
        # stops below with a message that says it, and what the run needed.
        if not issubclass(w.category, NoBundleWarning):
            click.echo(f"warning: {w.message}", err=True)
    if uses:
        _check_uses(stack, uses, act, f"{label} {args[0]}")
    return act


def _check_uses(stack: Stack, uses: list[Use], act: Any, label: str) -> None:
    """Stop before the run starts when no attached bundle lists what it loads."""
    from runtime.missing import search_roots_brief
    from runtime.resolve import plan, spec_snippet

    if not act.bundles:
        wanted = "; ".join(map(str, uses))
        raise click.ClickException(
            f"{label} loads {wanted} from a bundle, and no bundle is attached (looked in "
            f"{search_roots_brief()}). Build it with `bundle build {stack.spec}` (the "
            f"catalogue spec) and attach it: Kaggle: Add Input; elsewhere: "
            f"BUNDLE_PATH=bundles-dist/{stack.name}")
    missing = [use for use in uses if not any(plan(n, act.bundles)[0] is not None for n in use.names)]
    if missing:
        held = ", ".join(f"{b.name} {b.version} ({len(b.manifest.artifacts)} artifacts)"
                         for b in act.bundles)
        first = missing[0].names[0]
        raise click.ClickException(
            f"{label} loads {'; '.join(map(str, missing))}, which none of the attached "
            f"bundles holds ({held}; `bundle doctor` shows what each holds). Add it to the "
            f"spec and rebuild ({stack.spec} in the catalogue has it): "
            + spec_snippet(first).replace("\n", "; "))
