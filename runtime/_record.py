"""Value-object basics for the runtime's small classes, without ``dataclasses``.

``import runtime`` opens every notebook. ``import dataclasses`` (which brings
inspect, ast and dis) plus generating the methods of the nine classes on that
path cost ~12 ms of a bare ``import runtime`` here, more than everything else
it imports. The classes list their fields in ``_fields`` and write their own
``__init__``; this gives them the ``==``, ``repr`` and (frozen) hashing that
``@dataclass`` did.
"""

from __future__ import annotations


class Record:
    """Equality and repr over ``_fields``; mutable, so unhashable (like a dataclass)."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__}({args})"


class FrozenRecord(Record):
    """A Record whose fields cannot be reassigned; hashable. Set fields with ``_set``."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a {type(self).__name__}")

    _set = object.__setattr__

    def __reduce__(self) -> tuple:
        # pickle / copy rebuild through __init__ (restoring slots would go through
        # the refused __setattr__); every subclass takes its fields in _fields order.
        return (self.__class__, self._values())


def plain(value: object) -> object:
    """A JSON-ready copy: objects with ``to_json`` through it, paths as strings, lists and
    dicts element by element."""
    if hasattr(value, "to_json"):
        return value.to_json()  # type: ignore[union-attr]
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if type(value).__name__.endswith("Path"):  # pathlib without importing it here
        return str(value)
    return value


def json_fields(obj: object, names: tuple[str, ...], **extra: object) -> dict[str, object]:
    """``to_json`` of a record: ``names`` read off ``obj`` in that order (properties too),
    then ``extra``, each made JSON-ready by :func:`plain`."""
    out = {name: plain(getattr(obj, name)) for name in names}
    out.update({key: plain(value) for key, value in extra.items()})
    return out


def from_fields(cls: type, data: dict, names: tuple[str, ...], **converted: object) -> object:
    """The inverse for a class whose constructor takes ``names`` as keywords: the values
    ``data`` holds (missing ones left to the defaults), ``converted`` ones given."""
    return cls(**{name: data[name] for name in names if name in data}, **converted)
