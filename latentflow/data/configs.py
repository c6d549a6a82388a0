"""A small base for the data layer's config dataclasses: strict ``from_dict``, plain ``to_dict``.

Same rules as the model configs (:mod:`latentflow.configuration`): unknown keys
are errors naming the key, types are checked strictly, value checks live in
``validate()`` and raise :class:`ConfigError` stating the rule and the value.
"""

from __future__ import annotations

from typing import Any

from latentflow.configuration import Config
from latentflow.errors import ConfigError


class DataConfig(Config):
    """Base of the data layer's ``@dataclass`` configs (the shared strict :class:`Config`)."""


def check_choice(owner: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{name} must be one of {list(choices)}, got: {value!r}")


def check_positive(owner: str, name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        rule = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{owner}.{name} must be {rule}, got: {value}")
