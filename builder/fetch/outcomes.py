"""What an attempt's answer means: retry it, go one stream, or the bytes are wrong.

The exceptions here never leave the package: builder.fetch.download turns them into
retries or into the FetchError / IntegrityError the caller sees.
"""

from __future__ import annotations

import email.utils
import re
import time

CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)\s*/\s*(\d+|\*)\s*$", re.I)


class Transient(Exception):
    """An attempt failed in a way that another attempt may fix."""

    def __init__(self, reason: str, *, progressed: bool = False, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.progressed = progressed
        self.retry_after = retry_after


class OneStream(Exception):
    """The server cannot serve parts: fetch this file in one stream."""


class Sized(Exception):
    """A file of unknown size turned out large and rangeable (its first answer's
    Content-Length, ``Accept-Ranges: bytes`` and a strong ETag): the answer was left
    unread, and the next attempt may take it in parts."""


class Mismatch(Exception):
    """The bytes from this URL are wrong (hash, size or verify callback)."""

    def __init__(self, reason: str, *, actual: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.actual = actual


def parse_retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, cap))


def parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``bytes A-B/T`` -> (A, B, T); ``bytes */T`` -> (None, None, T); unknowns None."""
    m = CONTENT_RANGE_RE.match(value or "")
    if not m:
        return None, None, None
    start, end, total = m.groups()
    return (
        int(start) if start is not None else None,
        int(end) if end is not None else None,
        int(total) if total not in (None, "*") else None,
    )



def describe_network_error(exc: BaseException, read_timeout: float) -> str:
    text = str(exc).lower()
    if "read timed out" in text or ("timed out" in text and "connect" not in text):
        return f"stalled (no bytes for {read_timeout:g}s)"
    if "connecttimeout" in type(exc).__name__.lower() or "connect timeout" in text:
        return "connect timeout"
    if "reset" in text or "aborted" in text:
        return "connection reset"
    if "incompleteread" in text or "prematurely" in text or "incomplete" in text:
        return "body truncated"
    if "refused" in text:
        return "connection refused"
    if "resolve" in text or "name or service not known" in text:
        return "cannot resolve the host name (no network, or a typo in the url?)"
    return f"network error ({type(exc).__name__})"
