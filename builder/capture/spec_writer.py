"""A captured run, written as a spec in the normal format (``bundles/NAME.toml``).

Every Hub repo is pinned to the commit the run got, with ``include`` listing exactly
the files it read (each name escaped, so it matches only itself); a torch.hub
checkpoint becomes the registry entry that publishes it (``source = "torchvision"``
with the weights enum, ``source = "timm"`` with the pretrained tag) or, failing
that, a ``url`` artifact kept where torch.hub looks (``torch_hub = true``); a file
read into memory becomes a ``url`` artifact. Every file carries its sha256.

The text is generated (TOML has no writer in the standard library; strings are
written as JSON strings, which are valid TOML basic strings) and then parsed back
with the spec loader before anything is written, so a capture never leaves a spec
the build would refuse.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from builder.capture.reconcile import Capture, CheckpointCapture, HubCapture, UrlCapture
from builder.kaggle_rules import SLUG_MAX, SLUG_MIN

_ID_BAD = re.compile(r"[^a-z0-9._-]+")


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _escape_glob(name: str) -> str:
    """An ``include`` pattern that matches exactly ``name`` (fnmatch's [, * and ?)."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _slug(text: str) -> str:
    slug = _ID_BAD.sub("-", text.lower()).strip("-.") or "artifact"
    return slug[:60].rstrip("-.")


class _Ids:
    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, wanted: str) -> str:
        base = _slug(wanted)
        name, n = base, 2
        while name in self.used:
            name, n = f"{base}-{n}", n + 1
        self.used.add(name)
        return name


def bundle_name(command: list[str]) -> str:
    """A default bundle name from the command: the script or module it runs."""
    words = [w for w in command if not w.startswith("-")]
    for w in reversed(words):
        stem = Path(w).stem
        if stem and stem not in ("python", "python3", "torchrun", "accelerate") and "=" not in w:
            return _slug(stem)
    return "captured"


def _hub_block(h: HubCapture, ids: _Ids) -> list[str]:
    refs = ", ".join(h.refs) if h.refs else "no branch name"
    lines = ["[[artifact]]", f"id = {_q(ids.take(h.repo_id.split('/')[-1]))}"]
    if h.timm_model:
        lines += ['source = "timm"', f"model = {_q(h.timm_model)}  # weights in {h.repo_id}"]
    else:
        lines += ['source = "hf"', f"repo = {_q(h.repo_id)}"]
    lines += [f"revision = {_q(h.commit)}  # {refs} when captured", "include = ["]
    for f in sorted(h.files, key=lambda f: f.name):
        lines.append(f"    {_q(_escape_glob(f.name))},  # {f.size} bytes, sha256 {f.sha256[:16]}...")
    lines.append("]")
    if h.remote_code:
        lines.insert(0, f"# trust_remote_code: {', '.join(h.remote_code)} is code from {h.repo_id}; "
                        "review it before you run it offline")
    return lines


def _checkpoint_block(c: CheckpointCapture, ids: _Ids) -> list[str]:
    f = c.file
    if c.weights:
        lines = ["[[artifact]]", f"id = {_q(ids.take(c.weights.replace('_Weights.', '-')))}",
                 'source = "torchvision"', f"weights = {_q(c.weights)}"]
    elif c.timm_model:
        lines = ["[[artifact]]", f"id = {_q(ids.take(c.timm_model))}", 'source = "timm"',
                 f"model = {_q(c.timm_model)}"]
    elif c.url:
        lines = ["[[artifact]]", f"id = {_q(ids.take(Path(f.name).stem))}", 'source = "url"',
                 f"url = {_q(c.url)}", "torch_hub = true  # kept in torch/hub/checkpoints, where "
                 "torch.hub.load_state_dict_from_url looks"]
    else:
        return [f"# {f.name} ({f.size} bytes, sha256 {f.sha256}) reached TORCH_HOME/hub/checkpoints "
                "by a way the recorder did not see: add it as a url artifact with torch_hub = true"]
    lines += [f"sha256 = {_q(f.sha256)}", f"size = {f.size}"]
    return lines


def _url_block(u: UrlCapture, ids: _Ids) -> list[str]:
    name = Path(u.url.split("?", 1)[0]).name or "file"
    lines = ["[[artifact]]", f"id = {_q(ids.take(Path(name).stem or name))}", 'source = "url"',
             f"url = {_q(u.url)}"]
    if u.sha256:
        lines += [f"sha256 = {_q(u.sha256)}", f"size = {u.size}"]
    else:
        lines.insert(0, "# no sha256: the run's client did not let the recorder read the bytes; "
                        "build once with --trust-on-first-use, then pin what it records")
    return lines


def spec_text(capture: Capture, *, name: str, command: list[str]) -> str:
    """The spec of ``capture`` (raises ValueError when it has no artifact)."""
    if capture.empty:
        raise ValueError("the run fetched nothing a spec can hold")
    ids = _Ids()
    out = [
        f"# Written by `bundle capture` on {time.strftime('%Y-%m-%d %H:%M %Z')} from one run of:",
        f"#   {' '.join(command)}",
        "# Each artifact is what that run downloaded, pinned (commit, sha256). Review it, then",
        f"#   bundle build THIS_FILE   and check with   bundle run --strict -- {' '.join(command)}",
        "",
        "[bundle]",
        f"name = {_q(name)}",
        'version = "1.0.0"',
    ]
    if len(name) < SLUG_MIN:
        out.append(f"kaggle = {_q(name + '-bundle')}  # the Kaggle dataset slug: Kaggle wants "
                   f"{SLUG_MIN}-{SLUG_MAX} characters")
    for h in capture.hub:
        out += ["", *_hub_block(h, ids)]
    for c in capture.checkpoints:
        out += ["", *_checkpoint_block(c, ids)]
    for u in capture.urls:
        out += ["", *_url_block(u, ids)]
    if capture.problems:
        out += ["", "# Not in this spec (the run fetched these too; see `bundle capture`'s report):"]
        out += [f"#   {p.what}: {p.why}" for p in capture.problems]
    return "\n".join(out) + "\n"
