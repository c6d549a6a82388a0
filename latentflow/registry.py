"""One registry for everything savable: ``kind -> name -> class``.

Three kinds share it: ``model`` (name = ``config_class.model_type``), ``quantizer``
(name = ``config_class.name``) and ``prior`` (name = ``cls.kind``). Built-in classes
are imported lazily: each kind declares ``name -> module`` and the module registers
its classes when imported, so looking one name up never pays for the others.

Example::

    register_class("model", "mine", MyModel)       # what ``latentflow.register`` does
    class_for("model", "mine")                      # -> MyModel
    class_for("prior", "gpt")                       # imports latentflow.priors.gpt
"""

from __future__ import annotations

import importlib

from latentflow.errors import ConfigError

# kind -> the module that declares the kind's built-ins (imported on first lookup)
_KIND_MODULES: dict[str, str] = {
    "model": "latentflow.auto",
    "quantizer": "latentflow.quantizers.base",
    "prior": "latentflow.priors.base",
}
_CLASSES: dict[str, dict[str, type]] = {kind: {} for kind in _KIND_MODULES}
_BUILTINS: dict[str, dict[str, str]] = {}


def _check_kind(kind: str) -> None:
    if kind not in _CLASSES:
        raise ConfigError(f"unknown registry kind {kind!r}; expected one of: {sorted(_CLASSES)}")


def declare_builtins(kind: str, modules: dict[str, str]) -> None:
    """Declare ``name -> module`` for built-ins of ``kind``. The dict is kept by reference,
    so entries added to it later are found too."""
    _check_kind(kind)
    _BUILTINS[kind] = modules


def table(kind: str) -> dict[str, type]:
    """The live ``name -> class`` table of ``kind`` (registered classes only)."""
    _check_kind(kind)
    return _CLASSES[kind]


def register_class(kind: str, name: str, cls: type) -> type:
    """Register ``cls`` as ``name`` of ``kind``; a different class under a taken name is an error.

    Re-registering a class of the same qualified name replaces it (a reloaded module).
    """
    classes = table(kind)
    existing = classes.get(name)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise ConfigError(f"{kind} {name!r} is already registered to {existing.__name__}")
    classes[name] = cls
    return cls


def _builtins(kind: str) -> dict[str, str]:
    if kind not in _BUILTINS:
        importlib.import_module(_KIND_MODULES[kind])  # declares its built-ins
    return _BUILTINS.get(kind, {})


def known_names(kind: str) -> list[str]:
    """Every name of ``kind``: registered or built in (not yet imported)."""
    return sorted(set(table(kind)) | set(_builtins(kind)))


def class_for(kind: str, name: str) -> type:
    """The class registered as ``name`` of ``kind``, importing its built-in module when needed."""
    classes = table(kind)
    builtins = _builtins(kind)
    if name not in classes and name in builtins:
        importlib.import_module(builtins[name])
    if name not in classes:
        raise ConfigError(f"unknown {kind} {name!r}; registered: {known_names(kind)}")
    return classes[name]
