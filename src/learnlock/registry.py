"""The one name -> class-or-function registry of every family (datasets, models, protections, ...)
and its one factory, which refuses unknown settings once, naming the known ones.

    MODELS = Registry("model", fixed=("num_classes", "in_channels"))

    @MODELS.register("cnn")                    # sets cnn.name = "cnn"
    def cnn(num_classes, in_channels=3, width=32): ...

    MODELS.create("cnn", 10, 3, width=64)      # MODELS.create("cnn", 10, depth=3): LearnlockError

An entry's settings are the fields of its frozen `Settings` dataclass where it has one (protections,
attacks), else the named parameters of its constructor (models, key layers, encoders); the `fixed`
arguments every entry of a family takes (num_classes, a context, ...) are not settings.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Callable, Generic, Iterable, TypeVar

from .errors import LearnlockError

T = TypeVar("T", bound=Callable)


def settings_of(obj: Callable, fixed: Iterable[str] = ()) -> tuple[str, ...] | None:
    """The settings `obj` takes: its `Settings` dataclass's fields, else its constructor's named
    parameters less `fixed`; None when its constructor takes **kwargs (any setting)."""
    settings = getattr(obj, "Settings", None)
    if dataclasses.is_dataclass(settings):
        return tuple(f.name for f in dataclasses.fields(settings))
    params = inspect.signature(obj).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.name not in fixed and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def check_settings(what: str, obj: Callable, given: Iterable[str], fixed: Iterable[str] = ()) -> None:
    """Refuse settings `obj` (named `what` in the message) does not take, naming those it takes."""
    known = settings_of(obj, fixed)
    unknown = [] if known is None else sorted(set(given) - set(known) - set(fixed))
    if unknown:
        raise LearnlockError(f"{what}: unknown setting(s) {', '.join(unknown)}; "
                             f"valid settings: {', '.join(known) or '(none)'}")


# what a settings field declared with one of these annotations may hold (an int is a float here)
_SIMPLE_TYPES = {"float": (float, int), "int": (int,), "bool": (bool,), "str": (str,)}


def check_field_types(settings) -> None:
    """Refuse a frozen settings dataclass whose simply-typed fields hold another type (True for an
    int, "3" for a float) or a float that is not finite, through `settings.require`, so that each
    method's `check` only states its ranges."""
    for f in dataclasses.fields(settings):
        name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        kinds, value = _SIMPLE_TYPES.get(name), getattr(settings, f.name)
        if kinds is None:
            continue
        settings.require(isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds),
                         f"setting {f.name} must be {name}, got {value!r} ({type(value).__name__})")
        settings.require(not isinstance(value, float) or math.isfinite(value),
                         f"setting {f.name} must be finite, got {value}")


class Registry(Generic[T]):
    """Entries of one `family` by name. `fixed`: constructor arguments of every entry that are not
    settings; `kind`: the base class every entry must subclass (None: any callable)."""

    def __init__(self, family: str, fixed: tuple[str, ...] = (), kind: type | None = None):
        self.family, self.fixed, self.kind = family, fixed, kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register a class or function under `name` and set its `name`."""
        def deco(obj: T) -> T:
            if self.kind is not None and not (isinstance(obj, type) and issubclass(obj, self.kind)):
                raise TypeError(f"{self.family} {name!r} must be a {self.kind.__name__} subclass, got {obj!r}")
            if name in self._items:
                raise RuntimeError(f"{self.family} {name!r} registered twice")
            obj.name = name
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise LearnlockError(
                f"unknown {self.family} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def settings(self, name: str) -> tuple[str, ...] | None:
        """The settings entry `name` takes (None: any)."""
        return settings_of(self.get(name), self.fixed)

    def check(self, name: str, settings: Iterable[str]) -> None:
        """Refuse unknown `settings` (names) of entry `name` with one LearnlockError naming the known ones."""
        check_settings(f"{self.family} {name!r}", self.get(name), settings, self.fixed)

    def create(self, name: str, *args, **kwargs):
        """Entry `name` called with `args` and `kwargs`, once its settings are checked."""
        self.check(name, kwargs)
        return self.get(name)(*args, **kwargs)

    def __contains__(self, name: str) -> bool:
        return name in self._items
