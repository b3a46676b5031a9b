"""The smoke check: the built image, run once with no network, must find its bundle."""

from __future__ import annotations

import json
import re
from typing import Any

from builder.errors import SmokeCheckError
from builder.image.context import (
    IMAGE_BUNDLES_DIR,
)

SMOKE_TIMEOUT_S = 300


def smoke_check(
    client: Any, image: str, *, bundle_name: str, artifact_ids: list[str]
) -> dict[str, Any]:
    """Run `bundle doctor --json` in `image` with no network; check the bundle and its artifacts.

    Returns:
        {"exit_code", "bundle_found", "artifacts_present", "missing", "doctor"}.

    Raises:
        SmokeCheckError: doctor failed, printed no JSON, did not find the bundle, or
            reports an artifact of it missing.
    """
    container = client.containers.create(
        image, command=["bundle", "doctor", "--json"], network_mode="none"
    )
    try:
        container.start()
        try:
            code = container.wait(timeout=SMOKE_TIMEOUT_S)["StatusCode"]
        except Exception as e:  # requests' ReadTimeout, ConnectionError
            raise SmokeCheckError(
                f"{image}: `bundle doctor --json` did not finish within {SMOKE_TIMEOUT_S} s ({e})"
            ) from None
        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
    finally:
        container.remove(force=True)
    try:
        doctor = json.loads(out)
    except ValueError:
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise SmokeCheckError(
            f"{image}: `bundle doctor --json` exited {code} without JSON on stdout ({last}); "
            "the runtime in the image is broken"
        ) from None
    found = _doctor_bundle(doctor, bundle_name)
    if found is None:
        raise SmokeCheckError(
            f"{image}: `bundle doctor` found no bundle named {bundle_name!r} "
            f"(BUNDLE_PATH={IMAGE_BUNDLES_DIR}/{bundle_name}); the image is missing its bundle"
        )
    missing, problems = _doctor_findings(doctor, found, artifact_ids)
    if missing or problems:
        what = []
        if missing:
            what.append(f"missing artifact(s) {', '.join(missing)}")
        what += problems[:5]
        raise SmokeCheckError(
            f"{image}: bundle {bundle_name!r} inside the image: {'; '.join(what)}"
        )
    return {
        "exit_code": code,
        "bundle_found": True,
        "bundle_path": found.get("path"),
        "artifacts_present": list(artifact_ids),
        "missing": [],
        "doctor": doctor,
    }


def _doctor_bundle(doctor: Any, name: str) -> dict[str, Any] | None:
    bundles = doctor.get("bundles") if isinstance(doctor, dict) else None
    for b in bundles or []:
        if isinstance(b, dict) and b.get("name") == name:
            return b
    return None


def _doctor_findings(
    doctor: dict[str, Any], bundle: dict[str, Any], artifact_ids: list[str]
) -> tuple[list[str], list[str]]:
    """(artifacts missing, other problems) for `bundle` in a `bundle doctor --json` report.

    The report (runtime/cli.py) lists each bundle's artifact ids, and problems as
    "PATH (artifact 'ID'): detail" lines; a stack of the bundle lacking an
    artifact is reported under "stacks" with status "missing".
    """
    listed = set(bundle.get("artifacts") or [])
    missing = [a for a in artifact_ids if a not in listed]
    problems: list[str] = []
    root = str(bundle.get("path") or "")
    for text in doctor.get("problems") or []:
        text = str(text)
        if root and not text.startswith(root):
            continue
        m = re.search(r"\(artifact '([^']+)'\)", text)
        if m and m.group(1) in artifact_ids:
            if m.group(1) not in missing:
                missing.append(m.group(1))
        else:
            problems.append(text)
    declared = set(bundle.get("stacks") or [])
    for s in doctor.get("stacks") or []:
        if isinstance(s, dict) and s.get("name") in declared and s.get("status") == "missing":
            problems.append(
                f"stack {s['name']} lacks {', '.join(map(str, s.get('missing') or []))}"
            )
    return missing, problems
