"""What a validated spec is made of: ``Spec`` and its ``ArtifactSpec`` records.

Plain data, imported by the sources (which turn an ArtifactSpec into a plan) and by
builder.spec (which makes them from TOML); neither has to import the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ArtifactSpec:
    """One ``[[artifact]]`` of a spec. Source-specific fields live in ``options``.

    The properties below give typed access to the fields several sources share.
    """

    id: str
    source: str
    options: dict[str, Any] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)
    alternatives: list[str] = field(default_factory=list)
    description: str = ""

    def get(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)

    @property
    def sha256(self) -> str | None:
        return self.options.get("sha256")

    @property
    def size(self) -> int | None:
        return self.options.get("size")

    @property
    def mirrors(self) -> list[str]:
        return list(self.options.get("mirrors", []))

    @property
    def include(self) -> list[str] | None:
        return self.options.get("include")

    @property
    def exclude(self) -> list[str] | None:
        return self.options.get("exclude")

    def canonical(self) -> dict[str, Any]:
        """Everything that defines what gets fetched (for the build lock's fingerprint)."""
        return {"id": self.id, "source": self.source, "options": self.options}


@dataclass
class Spec:
    """A validated bundle spec."""

    name: str
    version: str
    title: str
    artifacts: list[ArtifactSpec]
    path: Path
    kaggle: str | None = None
    license: str = "other"
    stacks: list[str] = field(default_factory=list)
    description: str = ""
    wheels: dict[str, Any] | None = None
    #: what made a run bundle (``bundle from-run``): the stack, the command line, the code
    #: version, the base bundles; copied into bundle.json as ``run``
    run: dict[str, Any] | None = None

    def artifact(self, artifact_id: str) -> ArtifactSpec | None:
        return next((a for a in self.artifacts if a.id == artifact_id), None)

    @property
    def kaggle_slug(self) -> str:
        """The dataset slug: the SLUG of ``kaggle`` or else the bundle name."""
        return self.kaggle.split("/", 1)[1] if self.kaggle else self.name
