"""A small base for the data layer's config dataclasses: strict ``from_dict``, plain ``to_dict``.

Same rules as the model configs (:mod:`latentflow.configuration`): unknown keys
are errors naming the key, types are checked strictly, value checks live in
``validate()`` and raise :class:`ConfigError` stating the rule and the value.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from latentflow.configuration import validate_field
from latentflow.errors import ConfigError


class DataConfig:
    """Mixin for ``@dataclass`` configs of the data layer."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Value checks beyond types; subclasses override."""

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists) that :meth:`from_dict` reads back."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **overrides: Any):
        """Build the config, rejecting unknown keys and values of the wrong type."""
        data = {**(data or {}), **overrides}
        types = cls.field_types()
        kwargs = {}
        for key, value in data.items():
            if key not in types:
                raise ConfigError(f"unknown key {key!r} for {cls.__name__}; expected one of: {sorted(types)}")
            kwargs[key] = validate_field(cls.__name__, key, types[key], value)
        return cls(**kwargs)

    def replace(self, **changes: Any):
        """A validated copy with ``changes`` applied."""
        return type(self).from_dict(self.to_dict(), **changes)


def check_choice(owner: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{name} must be one of {list(choices)}, got: {value!r}")


def check_positive(owner: str, name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        rule = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{owner}.{name} must be {rule}, got: {value}")
