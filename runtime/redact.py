"""URLs fit for files, messages and logs: no ``user:password@``, no secret query values.

Shared by the builder (bundle.json, README, the build lock) and the runtime (the
capture recorder's log). Standard library only: the recorder runs at the start of
every Python child of ``bundle capture``.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: Query keys whose values are secrets or tie a URL to one (signed URLs: S3, GCS,
#: Azure SAS, CloudFront, the Hub's CDN): their values are never written.
SENSITIVE_QUERY_RE = re.compile(
    r"token|sig|signature|key|credential|auth|password|passwd|secret|session|policy"
    r"|expires?|expiry|x-amz-|x-goog-",
    re.I,
)
#: Azure SAS parameters with names too short for the pattern above.
SAS_KEYS = frozenset({"se", "st", "sp", "sv", "sr", "ss", "srt", "skoid", "sktid", "skt", "ske",
                      "sks", "skv", "sip", "spr"})
REDACTED = "***"


def sensitive_key(key: str) -> bool:
    """True for a query parameter whose value must not be written down."""
    return bool(SENSITIVE_QUERY_RE.search(key)) or key.lower() in SAS_KEYS


def redact_url(url: str) -> str:
    """``url`` fit for files, messages and logs: no user:password, no secret query values.

    Sensitive values are replaced by ``***`` (the mark that a URL was redacted);
    the other parameters keep their values, so the URL still says what it names.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if sensitive_key(k) else v) for k, v in pairs], safe="*/:")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
