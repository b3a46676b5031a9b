"""Files a run cannot read, found in one pass and reported together.

A data set of 1,800 songs or 27,000 tiles with a few broken files should say so once,
before training, with every name and reason, not stop at the first one mid-epoch.
The stacks scan (audio: while filling the feature cache; images: a full decode of
each) and then either refuse with :func:`summary` or, with ``--skip-bad-files``, leave
the files out with a warning that names them.
"""

from __future__ import annotations

from pathlib import Path

SKIP_OPTION = "--skip-bad-files"
SKIP_HELP = ("Leave out data files that cannot be read (named in a warning) instead of "
             "stopping; a scan before training finds them all.")
#: names shown in a message; the rest are counted
SHOWN = 5


def summary(bad: list[tuple[Path, str]], total: int, what: str, *, skipped: bool = False,
            action: str = "train") -> str:
    """One message for all unreadable files: count, the first names with their reasons, what to
    do (``action``: what --skip-bad-files lets the run do without them)."""
    shown = "; ".join(f"{path}: {reason}" for path, reason in bad[:SHOWN])
    more = f"; and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    if skipped:
        return (f"leaving out {len(bad)} of {total} {what} that cannot be read "
                f"({SKIP_OPTION}): {shown}{more}")
    return (f"{len(bad)} of {total} {what} cannot be read: {shown}{more}. Replace or remove "
            f"them, or pass {SKIP_OPTION} to {action} without them")
