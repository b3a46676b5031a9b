"""`bundle store ls` and `bundle store prune`: the store as a user manages it."""

from __future__ import annotations

import json
from pathlib import Path

import click

_STORE = click.option("--store", "store_dir", type=click.Path(file_okay=False, path_type=Path),
                      help="The store [default: $OFFLINE_BUNDLE_STORE or ~/.cache/offline-bundle/store].")


def _root(store_dir: Path | None) -> Path:
    from runtime import constants

    root = Path(store_dir) if store_dir is not None else constants.store_dir()
    if not (root / "blobs").is_dir():
        raise click.ClickException(f"{root}: no store here (nothing built with it yet); "
                                   "pass --store DIR or set OFFLINE_BUNDLE_STORE")
    return root


@click.group("store")
def store_group() -> None:
    """What the content-addressed store holds, and freeing what no bundle uses.

    Every build keeps its downloads in the store (one copy per sha256, hard-linked into
    bundle folders) and records the bundle and lock file it wrote. Nothing is ever
    removed by a build: `bundle store prune` does that.

    \b
    Examples:
      bundle store ls
      bundle store prune --dry-run
      bundle store prune --store /data/ob-store --json
    """


@store_group.command("ls")
@_STORE
@click.option("--json", "as_json", is_flag=True, help="Print the inventory as JSON.")
def store_ls(store_dir: Path | None, as_json: bool) -> None:
    """Size, blobs, which bundles and locks reference them, partial downloads."""
    from builder.store.gc import inventory
    from runtime.sizes import human_size

    inv = inventory(_root(store_dir))
    if as_json:
        click.echo(json.dumps(inv.to_json(), indent=2))
        return
    click.echo(f"store {inv.root}: {inv.blobs} blobs, {human_size(inv.blob_bytes)}")
    click.echo(f"  referenced by a bundle or lock: {inv.referenced}; kept for another hard link: "
               f"{inv.linked_only}; unreferenced: {len(inv.unreferenced)} "
               f"({human_size(inv.unreferenced_bytes)}, freed by `bundle store prune`)")
    stale = [p for p in inv.partials if p["stale"]]
    click.echo(f"  partial downloads: {len(inv.partials)} ({human_size(sum(p['size'] for p in inv.partials))}), "
               f"{len(stale)} untouched for a week; scratch files: {len(inv.scratch)}")
    if inv.roots:
        click.echo("  built bundles (roots):")
    for r in inv.roots:
        state = f"{r.referenced} blobs" if r.exists else "gone (pruned from the list)"
        click.echo(f"    {r.bundle}  {state}" + (f"  spec {r.spec}" if r.spec else ""))


@store_group.command("prune")
@_STORE
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--partials-older-than", "days", type=click.FloatRange(min=0), default=7.0,
              show_default=True, help="Remove partial downloads untouched for this many days.")
@click.option("--json", "as_json", is_flag=True, help="Print what was (or would be) removed as JSON.")
def store_prune(store_dir: Path | None, dry_run: bool, days: float, as_json: bool) -> None:
    """Remove blobs no bundle, lock or link needs, stale partials and scratch files.

    Never removes a blob that a recorded bundle folder or lock file names, that a
    bundle in ./bundles-dist or on $BUNDLE_PATH names, or that has another hard link.
    Refuses (exit 1) while a build is using the store.
    """
    from builder.errors import StoreError
    from builder.store.gc import prune
    from runtime.sizes import human_size

    try:
        report = prune(_root(store_dir), dry_run=dry_run, partial_max_age=days * 86400)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {report.blobs} unreferenced blob(s) ({human_size(report.blob_bytes)}), "
               f"{report.partials} stale partial(s) ({human_size(report.partial_bytes)}), "
               f"{report.scratch} scratch file(s), {report.roots} dead root(s); "
               f"kept {report.kept_blobs} blob(s)")
