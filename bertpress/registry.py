"""Registries where things vary (as torchao maps config types to handlers): quantization
schemes, calibration methods, pruning importance criteria, bench runtimes, search runtimes.

Adding a member is one class (or function) and one `@REGISTRY.register("name")`. A registry made
with `names=` (its vocabulary: a tuple from `bertpress.names` or the config enum that validates the
name) refuses to register a name outside it, and `missing()` lists the names with no member yet.
Every registry made here is listed in `all_registries()`, so a meta-test can iterate them and check
that every member is exercised by the suite.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from bertpress.errors import ConfigError

T = TypeVar("T")
_ALL: dict[str, "Registry"] = {}


class Registry(Generic[T]):
    """Name -> member. `get` refuses an unknown name in one line listing the known ones."""

    def __init__(self, kind: str, *, hint: str = "", names: Iterable[Any] | None = None) -> None:
        if kind in _ALL:
            raise ValueError(f"a registry of {kind!r} exists already")
        self.kind, self.hint = kind, hint
        self.vocabulary = None if names is None else tuple(getattr(n, "value", n) for n in names)
        self._members: dict[str, T] = {}
        self.uses: dict[str, int] = {}  # get() per member: the meta-test checks each is exercised
        _ALL[kind] = self

    def register(self, name: str) -> Callable[[T], T]:
        name = getattr(name, "value", name)  # an enum member registers under its value
        if self.vocabulary is not None and name not in self.vocabulary:
            raise ValueError(f"{self.kind} {name!r} is not one of {', '.join(self.vocabulary)}: add the name where "
                             "the vocabulary is defined first")

        def wrap(member: T) -> T:
            if name in self._members and self._members[name] is not member:
                raise ValueError(f"{self.kind} {name!r} is registered already")
            self._members[name] = member
            return member

        return wrap

    def get(self, name: str) -> T:
        key = getattr(name, "value", name)  # enum members look up by their value
        if key not in self._members:
            known = ", ".join(self._members) or "none"
            raise ConfigError(f"unknown {self.kind} {key!r} (known: {known}){self.hint}")
        self.uses[key] = self.uses.get(key, 0) + 1
        return self._members[key]

    def names(self) -> tuple[str, ...]:
        return tuple(self._members)

    def missing(self) -> tuple[str, ...]:
        """Names of the vocabulary with no member registered (empty without a vocabulary)."""
        return tuple(n for n in self.vocabulary or () if n not in self._members)

    def __contains__(self, name: object) -> bool:
        return getattr(name, "value", name) in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)


def all_registries() -> dict[str, Registry]:
    """Every registry created so far (import the modules that define them first)."""
    return dict(_ALL)
