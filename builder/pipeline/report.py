"""What a build did: ``BuildReport`` (``bundle build --json`` prints it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime._record import json_fields


@dataclass
class BuildReport:
    """What a build did (``bundle build --json`` prints it)."""

    bundle_dir: Path
    name: str = ""
    version: str = ""
    digest: str = ""
    artifacts: int = 0
    files: int = 0
    size: int = 0
    fetched_files: int = 0
    fetched_bytes: int = 0
    retries: int = 0  # failed download attempts that were tried again
    resumed_bytes: int = 0  # bytes kept from partial downloads instead of fetched again
    copied_files: int = 0  # files of `local` artifacts copied from this machine
    copied_bytes: int = 0
    resolved_from_lock: int = 0
    unchanged: bool = False  # the existing bundle folder already was this build
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        """Keep ``text`` among the warnings and say it now, on stderr (once: the CLI does
        not repeat them)."""
        import sys

        self.warnings.append(text)
        print(f"warning: {text}", file=sys.stderr, flush=True)

    def to_json(self) -> dict[str, Any]:
        return json_fields(self, ("bundle_dir", "name", "version", "digest", "artifacts", "files",
                                  "size", "fetched_files", "fetched_bytes", "retries",
                                  "resumed_bytes", "copied_files", "copied_bytes", "resolved_from_lock",
                                  "unchanged"),
                           seconds=round(self.seconds, 3), warnings=self.warnings)
