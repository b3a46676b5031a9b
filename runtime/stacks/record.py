"""One record per stack: its name, its commands, and what each command loads from a bundle.

timm-style: a stack module registers itself with a decorator on its click group, and
what a run needs is data kept beside the commands (timm keeps ``pretrained_cfg`` apart
from the architecture the same way)::

    @register_stack(
        "flood",
        summary="binary flood detection on tiles and Sen1Floods11 chips",
        needs=(Need("vit_b_16 backbone", ("ViT_B_16_Weights.IMAGENET1K_V1",), ("train",),
                    when={"arch": ("vit_b_16",), "pretrained": (True,)}),),
        docs="docs/vision.md",
    )
    @click.group("flood")
    def cli(): ...

``bundle run``, ``python -m runtime.stacks.NAME``, ``bundle doctor`` and the starter
notebooks read this record, so "what does this run load?" has one answer: the needs whose
command and option values match the parsed command line.

Imports click and the standard library only: stack modules are imported to list them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import click


@dataclass(frozen=True)
class Need:
    """Something a stack command loads from the bundles: a role, filled by any one of ``names``.

    Attributes:
        role: what it is for, as users read it ("backbone", "student", "imagenet-cond model").
        names: artifact refs (a Hub repo, a torchvision weights enum, a timm name, a URL);
            an artifact id in the user's spec matches too.
        commands: the commands that load it.
        when: option -> the values for which the need applies; every listed option must
            match (an option the command lacks never does). Empty: always.
        option: an option that names the artifact instead (``--model``): its value, when
            given, replaces ``names``; a path that exists on disk loads nothing from a bundle.
        default: part of the stack's usual run. ``bundle doctor`` fails when one of these is
            missing and reports the others as optional.
    """

    role: str
    names: tuple[str, ...]
    commands: tuple[str, ...]
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    option: str | None = None
    default: bool = True

    def applies(self, command: str, params: Mapping[str, Any]) -> bool:
        if command not in self.commands:
            return False
        return all(key in params and params[key] in values for key, values in self.when.items())

    def names_for(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The names this run asks for; () when the option points at a local file or folder."""
        value = params.get(self.option) if self.option else None
        if value is None or value == "":
            return self.names
        if os.path.exists(os.path.expanduser(str(value))):
            return ()
        return (str(value),)


@dataclass(frozen=True)
class Use:
    """A need as one run has it: the role and the names it will look up."""

    role: str
    names: tuple[str, ...]

    def __str__(self) -> str:
        return f"{' or '.join(self.names)} ({self.role})"


@dataclass(frozen=True)
class Stack:
    """What ``bundle run NAME`` is: its click group and what each of its commands loads.

    Attributes:
        name: the stack's name (``bundle run NAME``), also the catalogue spec's and the
            bundle folder's name.
        cli: the click group whose commands ``bundle run NAME COMMAND`` runs.
        summary: one line for listings.
        needs: every artifact any command may load, with when it does.
        one_of_optional: ``bundle doctor``: a run always picks one of the non-default needs
            (ddrm's ``--config``), so at least one must be complete.
        docs: the docs page, relative to the repository.
        inference: the command a run bundle's notebook runs with the trained model:
            arguments after ``bundle run NAME``, with ``{checkpoint}`` (the run bundle's
            name), ``{data}`` (the inputs) and ``{out}`` (under /kaggle/working); "" for
            a stack whose runs are not used for inference on their own.
    """

    name: str
    cli: click.Group
    summary: str
    needs: tuple[Need, ...] = ()
    one_of_optional: bool = False
    docs: str = ""
    inference: str = ""

    @property
    def spec(self) -> str:
        """The catalogue spec that builds what this stack loads."""
        return f"bundles/{self.name}.toml"

    @property
    def artifacts(self) -> tuple[str, ...]:
        """Every name any command may load, in order, once each (what starter notebooks list)."""
        seen: dict[str, None] = {}
        for need in self.needs:
            seen.update(dict.fromkeys(need.names))
        return tuple(seen)

    def uses(self, command: str, params: Mapping[str, Any]) -> list[Use]:
        """What ``command`` with these parsed option values loads from the bundles."""
        found: list[Use] = []
        for need in self.needs:
            if need.applies(command, params):
                names = need.names_for(params)
                if names and Use(need.role, names) not in found:
                    found.append(Use(need.role, names))
        return found

    def roles(self) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
        """``bundle doctor``'s view: (role -> names the usual run needs, role -> other names)."""
        required: dict[str, tuple[str, ...]] = {}
        optional: dict[str, tuple[str, ...]] = {}
        for need in self.needs:
            (required if need.default else optional).setdefault(need.role, need.names)
        for role in required:
            optional.pop(role, None)
        return required, optional


#: stack name -> record, filled as stack modules are imported (runtime.stacks lists them)
_REGISTRY: dict[str, Stack] = {}

_ROLE_RE = re.compile(r":(?:class|func|meth|mod|data|attr):`~?([^`]+)`")


def plain_help(group: click.Command) -> click.Command:
    """The help of a stack's group and commands as a terminal shows it: their docstrings'
    reST (``x``, :class:`~a.b.C`) in plain backticks. Idempotent."""

    def plain(text: str | None) -> str | None:
        if not text:
            return text
        return _ROLE_RE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text).replace("``", "`")

    group.help = plain(group.help)
    for command in getattr(group, "commands", {}).values():
        command.help = plain(command.help)
        command.short_help = plain(command.short_help)
    return group


def register_stack(name: str, *, summary: str, needs: tuple[Need, ...] = (),
                   one_of_optional: bool = False, docs: str = "", inference: str = "",
                   ) -> Callable[[click.Group], click.Group]:
    """Decorator for a stack's click group: records the stack under ``name``.

    Registering a name again replaces the record (``python -m runtime.stacks.NAME`` runs
    the module as ``__main__`` and may import it again under its own name).
    """

    def decorate(group: click.Group) -> click.Group:
        _REGISTRY[name] = Stack(name=name, cli=group, summary=summary, needs=tuple(needs),
                                one_of_optional=one_of_optional, docs=docs,
                                inference=inference)
        return group

    return decorate


def registered() -> dict[str, Stack]:
    return _REGISTRY

