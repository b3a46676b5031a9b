"""Bundle specs (``bundles/NAME.toml``): load and validate.

Every error is a :class:`~builder.errors.SpecError` whose one-line message names
the spec file, the artifact and the field, and says what to change, e.g.::

    bundles/x.toml: artifact 'vit': field 'repo' is required for source 'hf'

The fields an artifact takes depend on its source; each source module declares
them (see :mod:`builder.sources`), so this module never dispatches on names.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Any

from builder.artifact import ArtifactSpec, Spec
from builder.credentials import header_problem, redact_url, userinfo_problem
from builder.errors import SpecError
from builder.sources import FieldSpec, get_source, known_sources
from runtime.manifest import ManifestError, check_relative_path, read_document

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\Z")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+)*([-+.][0-9A-Za-z.+-]+)?\Z")
_KAGGLE_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_-]*/)?[a-z0-9][a-z0-9-]*[a-z0-9]\Z")
#: A spec `size` beyond this (1 PiB) is a typo, not a file: refused before any request.
MAX_FILE_SIZE = 1 << 50
_SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
_STACK_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
#: longest id: it names a folder (files/ID/), and file names stop at 255 bytes
ID_MAX = 128
NAME_BYTES_MAX = 255
TITLE_MIN, TITLE_MAX = 6, 50

#: [bundle] table fields: name -> (type, required)
_BUNDLE_FIELDS: dict[str, FieldSpec] = {
    "name": FieldSpec(str, required=True, help="[a-z0-9-], the default Kaggle slug"),
    "version": FieldSpec(str, required=True, help='e.g. "1.0.0"'),
    "title": FieldSpec(str, help="Kaggle title, 6-50 characters"),
    "kaggle": FieldSpec(str, help="OWNER/SLUG (or SLUG, yours) of the Kaggle dataset; default the name"),
    "license": FieldSpec(str, help='Kaggle license name, e.g. "other", "apache-2.0"'),
    "stacks": FieldSpec(list, help="runtime stacks this bundle serves"),
    "description": FieldSpec(str),
}

#: fields every artifact takes, whatever its source
COMMON_ARTIFACT_FIELDS: dict[str, FieldSpec] = {
    "id": FieldSpec(str, required=True, help="unique in the bundle; what runtime.resolve() takes"),
    "source": FieldSpec(str, required=True),
    "fallbacks": FieldSpec(list, help="ids of other artifacts, tried in order"),
    "alternatives": FieldSpec(list, help="other places this artifact is known to live (informative)"),
    "description": FieldSpec(str),
}

_WHEELS_FIELDS: dict[str, FieldSpec] = {
    # Read by builder.extras.wheels.build_wheelhouse; see its docstring.
    "requirements": FieldSpec(list, help='pip requirement strings, e.g. "timm==1.0.31"'),
    "python": FieldSpec(str, help='target Python, e.g. "3.11"'),
    "platform": FieldSpec((str, list), help='target platform tag(s), e.g. "manylinux2014_x86_64"'),
    "include_self": FieldSpec(bool, help="add a wheel of offline-bundle itself (default true)"),
    "no_deps": FieldSpec(bool, help="download the requirements without their dependencies"),
    "index_url": FieldSpec(str, help="pip index for the download"),
    "extra_index_urls": FieldSpec((str, list), help="more pip indexes"),
    "find_links": FieldSpec((str, list), help="local wheel folders"),
    "no_index": FieldSpec(bool, help="use find_links only"),
}

_TOP_LEVEL = ("bundle", "artifact", "wheels", "run")


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list of strings",
             dict: "a table of strings, e.g. { Authorization = \"env:MY_TOKEN\" }"}
    return " or ".join(names[x] for x in (t if isinstance(t, tuple) else (t,)))


def _type_ok(value: Any, t: type | tuple[type, ...]) -> bool:
    for one in t if isinstance(t, tuple) else (t,):
        if one is list:
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return True
        elif one is dict:
            if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
                return True
        elif isinstance(value, one) and not (one is int and isinstance(value, bool)):
            return True
    return False


def _check_fields(
    table: dict[str, Any], fields: dict[str, FieldSpec], where: str, what: str
) -> None:
    """Unknown fields (with a suggestion), missing required ones, wrong types."""
    for key in table:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known fields: {', '.join(fields)}"
            raise SpecError(f"{where}: unknown field '{key}' {what}{hint}")
    for key, fs in fields.items():
        if key not in table:
            if fs.required:
                raise SpecError(f"{where}: field '{key}' is required {what}".rstrip())
            continue
        value = table[key]
        if not _type_ok(value, fs.type):
            raise SpecError(
                f"{where}: field '{key}' must be {_type_name(fs.type)}, got {value!r}"
            )


def _check_bundle(table: Any, where: str) -> None:
    if not isinstance(table, dict):
        raise SpecError(f"{where}: a [bundle] table with name and version is required")
    _check_fields(table, _BUNDLE_FIELDS, f"{where}: [bundle]", "")
    name = table["name"]
    if not NAME_RE.match(name) or len(name) > 50:
        raise SpecError(
            f"{where}: [bundle]: field 'name' must be lowercase letters, digits and '-' "
            f"(a Kaggle slug), got {name!r}"
        )
    if not _VERSION_RE.match(table["version"]):
        raise SpecError(
            f"{where}: [bundle]: field 'version' must look like \"1.0.0\", got {table['version']!r}"
        )
    title = table.get("title")
    if title is not None and not TITLE_MIN <= len(title) <= TITLE_MAX:
        raise SpecError(
            f"{where}: [bundle]: field 'title' must be {TITLE_MIN}-{TITLE_MAX} characters "
            f"(Kaggle's rule), got {len(title)}"
        )
    for stack in table.get("stacks", []):
        if not _STACK_RE.match(stack):
            raise SpecError(
                f"{where}: [bundle]: field 'stacks': {stack!r} is not a stack name (lowercase "
                "letters, digits, '-' and '_'; `bundle run --help` lists them)"
            )
    kaggle = table.get("kaggle")
    if kaggle is not None and not _KAGGLE_RE.match(kaggle):
        raise SpecError(
            f"{where}: [bundle]: field 'kaggle' must be OWNER/SLUG or SLUG (slug: lowercase "
            f"letters, digits, '-'), got {kaggle!r}"
        )


def _artifact(raw: Any, index: int, where: str) -> ArtifactSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: artifact #{index + 1}: must be a table ([[artifact]])")
    art_id = raw.get("id")
    if not isinstance(art_id, str) or not art_id:
        raise SpecError(f"{where}: artifact #{index + 1}: field 'id' is required (a string)")
    if not _ID_RE.match(art_id) or len(art_id) > ID_MAX or art_id in (".", ".."):
        raise SpecError(
            f"{where}: artifact {art_id!r}: field 'id' may hold only letters, digits, '.', '_' "
            f"and '-', starting with a letter or digit, at most {ID_MAX} characters"
        )
    here = f"{where}: artifact '{art_id}'"
    source_name = raw.get("source")
    if not isinstance(source_name, str):
        raise SpecError(
            f"{here}: field 'source' is required; one of {', '.join(known_sources())}"
        )
    if source_name not in known_sources():
        close = difflib.get_close_matches(source_name, known_sources(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SpecError(
            f"{here}: field 'source': unknown source {source_name!r}{hint}; "
            f"known sources: {', '.join(known_sources())}"
        )
    source = get_source(source_name)
    fields = {**COMMON_ARTIFACT_FIELDS, **source.fields}
    _check_fields(raw, fields, here, f"for source '{source_name}'")
    options = {k: v for k, v in raw.items() if k not in COMMON_ARTIFACT_FIELDS}
    sha = options.get("sha256")
    if sha is not None:
        if not _SHA256_RE.match(sha.lower()):
            raise SpecError(f"{here}: field 'sha256' must be 64 hex digits, got {sha!r}")
        options["sha256"] = sha.lower()
    size = options.get("size")
    if size is not None and size < 0:
        raise SpecError(f"{here}: field 'size' must be >= 0, got {size}")
    if size is not None and size > MAX_FILE_SIZE:
        raise SpecError(f"{here}: field 'size' is {size} bytes, more than any disk holds "
                        f"(the limit here is {MAX_FILE_SIZE} bytes, 1 PiB); state the file's "
                        "size in bytes, or leave the field out")
    for key in ("url", "mirrors"):
        values = options.get(key)
        for url in [values] if isinstance(values, str) else values or []:
            if not re.match(r"^https?://", url):
                raise SpecError(
                    f"{here}: field '{key}' must be an http(s) URL, got {redact_url(url)!r}"
                )
            problem = userinfo_problem(url)
            if problem:
                raise SpecError(f"{here}: field '{key}': {redact_url(url)} {problem}")
    for name, value in (options.get("headers") or {}).items():
        problem = header_problem(name, value)
        if problem:
            raise SpecError(f"{here}: {problem}")
    filename = options.get("filename")
    if filename is not None:
        try:
            check_relative_path(filename, "")
            if "/" in filename or len(filename.encode()) > NAME_BYTES_MAX:
                raise ManifestError("")
        except ManifestError:
            raise SpecError(
                f"{here}: field 'filename' must be a plain file name (no '/', '\\', '..', NUL "
                f"or other control characters; at most {NAME_BYTES_MAX} bytes), got {filename!r}"
            ) from None
    problem = source.check(options)
    if problem:
        raise SpecError(f"{here}: {problem}")
    return ArtifactSpec(
        id=art_id,
        source=source_name,
        options=options,
        fallbacks=list(raw.get("fallbacks", [])),
        alternatives=list(raw.get("alternatives", [])),
        description=raw.get("description", ""),
    )


def parse_spec(data: dict[str, Any], path: str | os.PathLike) -> Spec:
    """Validate parsed TOML. ``path`` names the spec in error messages."""
    where = str(path)
    for key in data:
        if key not in _TOP_LEVEL:
            close = difflib.get_close_matches(key, _TOP_LEVEL, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise SpecError(
                f"{where}: unknown table [{key}]{hint}; a spec has [bundle], [[artifact]], [wheels] "
                "and (written by bundle from-run) [run]"
            )
    bundle = data.get("bundle")
    _check_bundle(bundle, where)
    raw_artifacts = data.get("artifact", [])
    if not isinstance(raw_artifacts, list):
        raise SpecError(f"{where}: artifacts are written [[artifact]] (an array of tables)")
    artifacts = [_artifact(raw, i, where) for i, raw in enumerate(raw_artifacts)]

    seen: set[str] = set()
    for art in artifacts:
        if art.id in seen:
            raise SpecError(f"{where}: artifact '{art.id}': field 'id': duplicate id; ids must be unique")
        seen.add(art.id)
    for art in artifacts:
        for fb in art.fallbacks:
            if fb == art.id:
                raise SpecError(f"{where}: artifact '{art.id}': field 'fallbacks': an artifact cannot fall back to itself")
            if fb not in seen:
                raise SpecError(
                    f"{where}: artifact '{art.id}': field 'fallbacks': no artifact has id {fb!r}; "
                    f"ids in this spec: {', '.join(a.id for a in artifacts)}"
                )

    wheels = data.get("wheels")
    if wheels is not None:
        if not isinstance(wheels, dict):
            raise SpecError(f"{where}: [wheels] must be a table")
        _check_fields(wheels, _WHEELS_FIELDS, f"{where}: [wheels]", "")
        for key in ("index_url", "extra_index_urls"):
            values = wheels.get(key)
            for url in [values] if isinstance(values, str) else values or []:
                if userinfo_problem(url):
                    raise SpecError(
                        f"{where}: [wheels]: field '{key}': {redact_url(url)} holds credentials "
                        "(user:password@); a spec is copied and committed. Leave the field out "
                        "and export PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (pip reads them), or "
                        "use pip's keyring support"
                    )
        for req in wheels.get("requirements", []):
            if not req.strip() or req.lstrip().startswith("-"):
                raise SpecError(
                    f"{where}: [wheels]: field 'requirements': {req!r} is not a requirement "
                    "(pip options go in index_url, find_links, no_deps, no_index)"
                )

    if not artifacts and wheels is None:
        raise SpecError(
            f"{where}: the spec asks for nothing: add at least one [[artifact]] table (id, "
            'source and its fields, e.g. id = "vit", source = "hf", repo = "ORG/NAME"; '
            "docs/build.md) or a [wheels] table"
        )
    run = data.get("run")
    if run is not None and not isinstance(run, dict):
        raise SpecError(f"{where}: [run] must be a table (what bundle from-run writes)")
    name = bundle["name"]
    return Spec(
        name=name,
        version=bundle["version"],
        title=bundle.get("title") or _default_title(name),
        kaggle=bundle.get("kaggle"),
        license=bundle.get("license", "other"),
        stacks=list(bundle.get("stacks", [])),
        description=bundle.get("description", ""),
        artifacts=artifacts,
        wheels=dict(wheels) if wheels is not None else None,
        run=_plain(run) if run is not None else None,
        path=Path(path),
    )


def _plain(value: Any) -> Any:
    """A TOML value as JSON values (TOML dates become ISO strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _default_title(name: str) -> str:
    title = f"{name} offline bundle"
    if len(title) > TITLE_MAX:
        title = name[:TITLE_MAX]
    return title if len(title) >= TITLE_MIN else f"{title} models"


def load_spec(path: str | os.PathLike) -> Spec:
    """Read and validate a bundle spec.

    Args:
        path: the TOML file, e.g. ``bundles/emotion-vit.toml``.

    Returns:
        The validated :class:`Spec`.

    Raises:
        SpecError: the file is missing, not TOML, or fails validation; the one-line
            message names the file, the artifact and the field.
    """
    data = read_document(os.fspath(path), SpecError, missing="spec not found", kind="TOML",
                         parse=tomllib.loads, invalid=tomllib.TOMLDecodeError)
    return parse_spec(data, path)
