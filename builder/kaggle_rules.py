"""Kaggle's rules for dataset ids and titles, in one place.

`bundle publish` refuses what breaks them (builder.publish.kaggle_plan); `bundle build`
warns about them (a bundle named "demo" builds, and would then be refused by publish),
and the spec checks the form of its `kaggle` field. Standard library only.
"""

from __future__ import annotations

import re

TITLE_MIN, TITLE_MAX = 6, 50
SUBTITLE_MIN, SUBTITLE_MAX = 20, 80
SLUG_MIN, SLUG_MAX = 6, 50
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\Z")
OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\Z")


def slug_of(kaggle: str | None, name: str) -> str:
    """The dataset slug publish uses: the spec's `kaggle` (OWNER/SLUG or SLUG), else the name."""
    return (kaggle or name).rsplit("/", 1)[-1]


def publish_warnings(*, name: str, kaggle: str | None, title: str | None) -> list[str]:
    """What `bundle publish` would refuse about a bundle's id and title, as build warnings."""
    problems = []
    slug = slug_of(kaggle, name)
    where = "[bundle] kaggle" if kaggle else "the bundle name"
    if not SLUG_MIN <= len(slug) <= SLUG_MAX:
        problems.append(
            f"{where} {slug!r} has {len(slug)} characters, and Kaggle's dataset slugs need "
            f"{SLUG_MIN}-{SLUG_MAX}: bundle publish would refuse it. Add "
            f'kaggle = "{slug}-bundle" (any {SLUG_MIN}-{SLUG_MAX} characters) to [bundle]')
    shown = title or name
    if not TITLE_MIN <= len(shown) <= TITLE_MAX:
        problems.append(
            f"the title {shown!r} has {len(shown)} characters, and Kaggle wants "
            f"{TITLE_MIN}-{TITLE_MAX}: bundle publish would refuse it. Set title = \"...\" in [bundle]")
    return problems
