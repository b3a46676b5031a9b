"""The download engine: one file from its URLs into the store, verified, resumable, patient.

Used by the ``url`` source directly and by the build for every planned file. What it
does that a plain HTTP client does not:

* resume from ``store.partial_path(key)`` with ``Range: bytes=N-`` (and ``If-Range``
  when the server gave a validator), so a killed build or a reset costs only the
  missing bytes;
* a large file on a link that caps each connection: parts over several connections,
  each retried and resumed on its own, with a resume record (:mod:`.segmented`);
* retry connection errors, resets, stalls, truncated bodies, 408, 429 and 5xx with
  exponential backoff and jitter, honouring ``Retry-After``; a stall timeout (no
  bytes for N seconds) distinct from the total timeout;
* sha256 computed while streaming, size checked, then ``verify(path)``; only then
  does the file get its name in the store;
* mirrors tried in order; ``--mirror FROM=TO`` prefix rewrites;
* plain ``http://`` refused except to loopback hosts or with ``allow_http``, also
  for redirect targets (checked before the redirect is followed).

Credentials: ``headers`` (e.g. ``Authorization``) are never logged and never put in
error messages, and are dropped when a redirect leaves the host (:mod:`.httpclient`,
urllib3 with the parts of requests we need).

Modules, each importing only those above it in this list (and builder.errors,
builder.credentials, builder.store):

    policy      FetchPolicy, FetchResult, size limits
    urls        which URLs may be fetched; --mirror rewrites
    httpclient  urllib3: redirects, proxies, CA bundles
    outcomes    what an answer means: retry, one stream, wrong bytes
    sinks       writing and hashing a body on a helper thread
    state       DownloadState: the partial, its record, the running hash, counters
    stream      one attempt over one connection
    parts       a large file's parts, resume record and hasher
    probe       the first request of a large file: one stream or parts?
    segmented   the parts over several connections
    download    Download: the retry loop over URLs and attempts, then verify and store
    api         fetch(), the entry point
"""

from builder.fetch.api import fetch
from builder.fetch.policy import FetchPolicy, FetchResult
from builder.fetch.urls import check_url_allowed, parse_mirror, parse_mirrors, rewrite_url

__all__ = ["FetchPolicy", "FetchResult", "check_url_allowed", "fetch", "parse_mirror", "parse_mirrors",
           "rewrite_url"]
