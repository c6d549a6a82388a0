"""Config base class: a dataclass that validates, serializes and round-trips.

A model's config is a dataclass subclass of :class:`LatentConfig` with a
``model_type`` class attribute. ``from_dict`` rejects unknown keys and values of
the wrong type, naming the key and the expected type; keys that start with ``_``
(``_class_name``, ``_diffusers_version``) are metadata and ignored.

Example::

    @dataclass
    class MyConfig(LatentConfig):
        model_type: ClassVar[str] = "mine"
        hidden: int = 64

    cfg = MyConfig.from_dict({"hidden": 32})
    cfg.save_pretrained("out/")           # out/config.json
    assert MyConfig.from_pretrained("out/") == cfg
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import fsspec
from pydantic import TypeAdapter, ValidationError

from latentflow.errors import ConfigError
from latentflow.version import __version__

CONFIG_NAME = "config.json"


@functools.lru_cache(maxsize=None)
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return f"one of {list(typing.get_args(tp))}"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def validate_field(owner: str, name: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against type ``tp`` strictly (no "3" -> 3), JSON-style (lists -> tuples)."""
    try:
        return _adapter(tp).validate_json(json.dumps(value), strict=True)
    except (ValidationError, TypeError, ValueError) as err:
        raise ConfigError(
            f"{owner}.{name} must be {_type_name(tp)}, got: {value!r} ({type(value).__name__})"
        ) from err


class Config:
    """Base of every config dataclass: strict ``from_dict``, plain ``to_dict``, ``validate``.

    Subclasses are ``@dataclass``es. A field typed as another ``Config`` subclass is a
    nested section: it reads from a mapping and writes back as one. Unknown keys are
    errors naming the key; types are checked strictly (no ``"3"`` -> 3); value checks
    live in :meth:`validate` and raise :class:`ConfigError` stating the rule and the value.
    """

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Value checks beyond types; subclasses extend and call ``super().validate()``."""

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists, sections dicts) that :meth:`from_dict` reads back."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Config):
                value = value.to_dict()
            elif isinstance(value, (list, tuple)):  # a list of sections writes back as a list of mappings
                value = [v.to_dict() if isinstance(v, Config) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **overrides: Any):
        """Build the config, rejecting unknown keys and values of the wrong type.

        Args:
            data: a dict as written by :meth:`to_dict`; keys starting with ``_`` are metadata and ignored.
            overrides: keys that replace those in ``data``.
        """
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} must be a mapping, got: {data!r} ({type(data).__name__})")
        data = {**(data or {}), **overrides}
        types = cls.field_types()
        kwargs = {}
        for key, value in data.items():
            if key.startswith("_"):
                continue  # metadata: _class_name, _latentflow_version, ...
            if key not in types:
                raise ConfigError(f"unknown key {key!r} for {cls.__name__}; expected one of: {sorted(types)}")
            kwargs[key] = _field_value(cls.__name__, key, types[key], value)
        return cls(**{k: v for k, v in kwargs.items() if v is not _DEFAULT})

    def replace(self, **changes: Any):
        """A validated copy with ``changes`` applied."""
        return type(self).from_dict(self.to_dict(), **changes)


_DEFAULT = object()


def _section_type(tp: Any) -> tuple[type | None, bool]:
    """``(section class, optional)`` when ``tp`` is a Config subclass or ``Config | None``."""
    if isinstance(tp, type) and issubclass(tp, Config):
        return tp, False
    args = typing.get_args(tp)
    if len(args) == 2 and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        if isinstance(inner, type) and issubclass(inner, Config):
            return inner, True
    return None, False


def _section_list_type(tp: Any) -> type | None:
    """The section class when ``tp`` is ``list[Config subclass]`` (a list of sections, e.g. text encoders)."""
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp) or (None,)
        if isinstance(inner, type) and issubclass(inner, Config):
            return inner
    return None


def _field_value(owner: str, key: str, tp: Any, value: Any) -> Any:
    item = _section_list_type(tp)
    if item is not None:  # a list of sections: each a mapping (or an instance), read strictly
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{owner}.{key} must be a list of {item.__name__} mappings, got: {value!r} ({type(value).__name__})")
        for i, v in enumerate(value):
            if not isinstance(v, (dict, item)):
                raise ConfigError(f"{owner}.{key}[{i}] must be a mapping, got: {v!r} ({type(v).__name__})")
        return [v if isinstance(v, item) else item.from_dict(v) for v in value]
    section, optional = _section_type(tp)
    if section is not None:  # a nested section
        tp = section
        if value is None:
            return None if optional else _DEFAULT
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{owner}.{key} must be a mapping, got: {value!r} ({type(value).__name__})")
        return tp.from_dict(value)
    return validate_field(owner, key, tp, value)


@dataclass
class LatentConfig(Config):
    """Base of every model config.

    Latent normalization lives here so every family exposes it the same way:
    ``normalize(z) = (z - shift_factor) * scaling_factor``, or, when
    ``latents_mean``/``latents_std`` are set (one value per channel),
    ``(z - mean) / std * scaling_factor``.
    """

    model_type: ClassVar[str] = "base"

    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    latents_mean: list[float] | None = None
    latents_std: list[float] | None = None
    check_finite: bool = False  # raise on NaN/Inf in model inputs and outputs

    def validate(self) -> None:
        super().validate()
        if self.scaling_factor == 0:
            raise ConfigError("scaling_factor must be != 0, got: 0")
        if (self.latents_mean is None) != (self.latents_std is None):
            raise ConfigError("latents_mean and latents_std must be set together or not at all")
        if self.latents_std is not None and any(s <= 0 for s in self.latents_std):
            raise ConfigError(f"latents_std must be > 0 everywhere, got: {self.latents_std}")

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **super().to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **overrides: Any) -> "LatentConfig":
        """Build a config, rejecting unknown keys and wrong types.

        Args:
            data: a dict as written by :meth:`to_dict` (``model_type`` optional,
                but it must match when present).
            overrides: keys that replace those in ``data``.
        """
        data = {**(data or {}), **overrides}
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(
                f"{cls.__name__} expects model_type {cls.model_type!r}, got: {model_type!r}"
            )
        return super().from_dict(data)

    def to_json_string(self) -> str:
        return json.dumps({**self.to_dict(), "_latentflow_version": __version__}, indent=2, sort_keys=True)

    # ---- files ------------------------------------------------------
    def save_pretrained(self, directory: str, storage_options: dict | None = None) -> None:
        fs, path = fsspec.url_to_fs(str(directory), **(storage_options or {}))
        fs.makedirs(path, exist_ok=True)
        with fs.open(f"{path.rstrip('/')}/{CONFIG_NAME}", "w") as f:
            f.write(self.to_json_string())

    @classmethod
    def from_pretrained(cls, path: str, storage_options: dict | None = None, **overrides: Any):
        """Load ``config.json`` from a directory (local or fsspec URL), or a ``.json`` file."""
        data = read_config_dict(path, storage_options)
        return cls.from_dict(data, **overrides)


def read_config_dict(path: str, storage_options: dict | None = None) -> dict[str, Any]:
    path = str(path)
    fs, fpath = fsspec.url_to_fs(path, **(storage_options or {}))
    if not fpath.endswith(".json"):
        fpath = f"{fpath.rstrip('/')}/{CONFIG_NAME}"
    if not fs.exists(fpath):
        raise ConfigError(f"no {CONFIG_NAME} found at {path!r} (looked for {fpath!r})")
    with fs.open(fpath, "r") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{fpath!r} is not valid JSON: {err}") from err


def check_choice(owner: str, name: str, value: Any, choices: tuple) -> None:
    """Raise ``ConfigError("owner.name must be one of [...], got: value")`` unless ``value`` is in ``choices``."""
    if value not in choices:
        raise ConfigError(f"{owner}.{name} must be one of {list(choices)}, got: {value!r}")


def check_positive(owner: str, name: str | None = None, value: float | None = None, /, *,
                   allow_zero: bool = False, **values: float | None) -> None:
    """Raise ``ConfigError("owner.name must be > 0, got: v")`` (``>= 0`` with ``allow_zero``) for a bad value.

    Give one value positionally, ``check_positive("Cfg", "batch_size", 0)``, or several by name,
    ``check_positive("train", max_steps=10, log_every=0)``. ``None`` means unset and is not checked.
    """
    if name is not None:
        values = {name: value, **values}
    rule = ">= 0" if allow_zero else "> 0"
    for key, v in values.items():
        if v is not None and (v < 0 or (v == 0 and not allow_zero)):
            raise ConfigError(f"{owner}.{key} must be {rule}, got: {v}")
