"""A job's config from the command line: YAML + ``key=value`` overrides, and ``--help``, from one dataclass.

Every job (encode, train, evaluate) declares its config once, as a :class:`~latentflow.configuration.Config`
dataclass whose docstring has an ``Attributes:`` section. From that class alone this module

* loads the job's YAML into the typed config (:func:`load_job_config`),
* applies dotted ``key=value`` overrides typed against *that* class (:func:`apply_overrides`),
* lists every key with its type, default and help (:func:`config_help` for ``--help``,
  :func:`config_markdown` for the README's key tables).

Example::

    cfg = load_job_config(EncodeJobConfig, "configs/encode/default.yaml", ["batch_size=4", "source.urls=[a.tar]"])
    parser = argparse.ArgumentParser(epilog=config_help(EncodeJobConfig),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import types
import typing
from typing import Any, Iterator, NamedTuple, TypeVar

import fsspec
import yaml

from latentflow.configuration import Config, _section_type
from latentflow.errors import ConfigError

C = TypeVar("C", bound=Config)


# ---- loading ------------------------------------------------------------------------------------


def read_yaml(path: str, storage_options: dict | None = None) -> dict[str, Any]:
    """The top-level mapping of a YAML file (local path or fsspec URL); an empty file is ``{}``.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or does not hold a mapping at the top level.
    """
    try:
        with fsspec.open(str(path), "r", **(storage_options or {})) as f:
            data = yaml.safe_load(f)
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"config file {str(path)!r} not found; give a YAML job file (the shipped ones are under configs/)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{str(path)!r} is not valid YAML ({getattr(err, 'problem', None) or type(err).__name__}{line}); "
                          "fix the file") from None
    return check_mapping(data, str(path))


def check_mapping(data: Any, where: str) -> dict[str, Any]:
    """``data`` when it is a mapping (``None`` -> ``{}``), else a ConfigError naming ``where``."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where!r} must hold a YAML mapping at the top level, got: {type(data).__name__}")
    return data


def load_job_config(cls: type[C], path: str | None = None, overrides: list[str] | None = None,
                    storage_options: dict | None = None, data: dict[str, Any] | None = None) -> C:
    """A job's typed config from its YAML file (or ``data`` already read) plus ``key=value`` overrides.

    Args:
        cls: the job's config class; the overrides are typed against its fields.
        path: the YAML file (local or fsspec URL); None starts from ``data`` or the defaults.
        overrides: e.g. ``["batch_size=4", "processor.resolution=64", "source.urls=[s3://b/x.tar]"]``.
        storage_options: fsspec options to read ``path``.
        data: the YAML's content when the caller read it already (``path`` then only names it in errors).

    Returns:
        The validated config; unknown keys at any depth are errors naming the key.
    """
    if data is None:
        data = read_yaml(path, storage_options) if path else {}
    data = check_mapping(data, str(path or "the config"))
    return cls.from_dict(apply_overrides(data, list(overrides or []), cls))


# ---- key=value overrides ------------------------------------------------------------------------


def apply_overrides(data: dict[str, Any], overrides: list[str], config_class: type[Config]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested dict, each value typed by ``config_class``'s field. Returns a new dict.

    Values parse as YAML. A value that does not parse, or parses to a mapping where the field wants a
    string or a list (``/d/shard-{000000..000099}.tar``: braces read as a YAML mapping), is taken as
    the raw string; a string given to a list field becomes a one-item list; a number or boolean given
    to a string field stays the string typed (``lpips_weights=2024`` -> ``"2024"``); a float field reads
    ``1e-3`` as a number (YAML 1.1 would read a string).
    """
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"overrides must look like key=value, got: {item!r}")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {key!r} is not a section")
        node[keys[-1]] = _override_value(raw, field_type(config_class, keys))
    return out


def field_type(config_class: type[Config], keys: list[str]) -> Any:
    """The declared type of the dotted field ``keys`` (None where a key is not a known field)."""
    tp: Any = config_class
    for key in keys:
        section, _ = _section_type(tp)
        if section is None or key not in section.field_types():
            return None
        tp = section.field_types()[key]
    return tp


def _override_value(raw: str, tp: Any) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw  # not YAML (e.g. "{000..009}.tar"): the string itself
    wants = _kinds(tp)
    if isinstance(value, dict) and wants & {str, list} and dict not in wants:
        return [raw] if str not in wants else raw
    if isinstance(value, str) and list in wants and str not in wants:
        return [value]
    if isinstance(value, (bool, int, float)) and str in wants and not wants & {bool, int, float}:
        return raw.strip()
    if isinstance(value, str) and value == raw.strip() and float in wants and str not in wants:
        try:
            return float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
        except ValueError:
            pass
    return value


def _kinds(tp: Any) -> set[type]:
    """The plain kinds a type annotation accepts: {str}, {list}, {dict, NoneType}, ..."""
    if tp is None:
        return set()
    args, origin = typing.get_args(tp), typing.get_origin(tp)
    if origin in (list, tuple):
        return {list}
    if origin is dict:
        return {dict}
    if origin in (typing.Union, types.UnionType):  # Optional[X], X | None
        return set().union(*(_kinds(a) for a in args))
    return {tp} if isinstance(tp, type) else set()


# ---- keys, types, defaults and help, from the dataclass ----------------------------------------


class ConfigKey(NamedTuple):
    """One row of a config's key table."""

    key: str  # dotted: "source.urls"
    type: str  # "list[str] | str"
    default: str  # as YAML would spell it: "[]", "null", "fp32"
    help: str  # the ``Attributes:`` entry, on one line
    section: bool  # a nested config section (its keys follow)


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: description}`` from the ``Attributes:`` sections of ``cls`` and its bases (the class's own win).

    An entry may name several fields (``a, b: text`` or ``a / b: text``); continuation lines are
    joined into one line.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        docs.update(_parse_attributes(inspect.getdoc(klass) if "__doc__" in vars(klass) else None))
    return docs


_ENTRY = re.compile(r"^(\w+(?:\s*(?:,|/)\s*\w+)*)\s*:\s*(.*)$")


def _parse_attributes(doc: str | None) -> dict[str, str]:
    lines = (doc or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return {}
    indent = len(lines[start]) - len(lines[start].lstrip())
    entries: list[tuple[list[str], list[str]]] = []
    entry_indent = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth <= indent:
            break  # the section ended
        match = _ENTRY.match(line.strip())
        if match and (entry_indent is None or depth <= entry_indent):
            entry_indent = depth
            entries.append((re.split(r"\s*(?:,|/)\s*", match.group(1)), [match.group(2)]))
        elif entries:
            entries[-1][1].append(line.strip())
    return {name: " ".join(" ".join(text).split()) for names, text in entries for name in names}


def config_keys(cls: type[Config], prefix: str = "", defaults: Config | None = None) -> Iterator[ConfigKey]:
    """Every key of ``cls``, nested sections included (their keys dotted), in declaration order.

    Args:
        cls: a :class:`Config` dataclass.
        prefix: the dotted path of ``cls`` inside its job config.
        defaults: the section's default instance in its parent (``EvalJobConfig.source`` defaults
            to a folder source), so nested defaults are the ones the job really starts from.
    """
    docs, types = attribute_docs(cls), cls.field_types()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name) if defaults is not None else _field_default(f)
        section, optional = _section_type(types[f.name])
        key = f"{prefix}{f.name}"
        shown = "null (section off)" if section is not None and value is None else "(section)" if section else _yaml(value)
        yield ConfigKey(key, type_name(types[f.name]), shown, docs.get(f.name, ""), section is not None)
        if section is not None:
            yield from config_keys(section, f"{key}.", value if isinstance(value, Config) else None)


_MISSING = object()


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        try:
            return f.default_factory()
        except ConfigError:  # a section whose defaults alone are invalid (a source needs urls): list its fields' own
            return _MISSING
    return _MISSING


def type_name(tp: Any) -> str:
    """A type as a user reads it: ``int``, ``str | None``, ``list[str]``, ``int | 'auto' | None``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "None"
    if tp is Ellipsis:
        return "..."
    if tp is Any:
        return "Any"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]"
    return getattr(tp, "__name__", None) or str(tp)


def _yaml(value: Any) -> str:
    """A default as the YAML that would set it (``null``, ``true``, ``[]``, ``fp32``)."""
    if value is _MISSING:
        return "(required)"
    if isinstance(value, Config):
        value = value.to_dict()
    if isinstance(value, tuple):
        value = list(value)
    if value == "":
        return "''"
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def _first_sentence(text: str, limit: int = 110) -> str:
    """The first sentence of ``text``; past ``limit`` characters, cut at a ``;`` or a word, marked ``...``."""
    head = re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
    if len(head) <= limit:
        return head
    cut = head.rfind("; ", 0, limit)
    return head[:cut] + " ..." if cut > limit // 3 else head[: head.rfind(" ", 0, limit - 4)] + " ..."


def plain(text: str, code: str = "") -> str:
    """A docstring's reST as plain text: ``x`` -> x (or ``code``+x+``code``), :class:`~a.B` -> B."""
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?([\w]+)`", rf"{code}\1{code}", text)
    return re.sub(r"``(.+?)``", rf"{code}\1{code}", text)


def config_help(cls: type[Config], title: str | None = None) -> str:
    """Every key of a job config with its type, default and help, for an argparse epilog.

    Use with ``formatter_class=argparse.RawDescriptionHelpFormatter`` so the lines are kept.
    """
    rows = list(config_keys(cls))
    width = max(len(r.key) for r in rows) + 2
    lines = [title or f"config keys of {cls.__name__} (set in the YAML, or override with key=value; dotted for sections):"]
    for r in rows:
        lines.append(f"  {r.key:<{width}}{r.type} = {r.default}")
        if r.help:
            lines.append(f"  {'':<{width}}  {_first_sentence(plain(r.help))}")
    return "\n".join(lines)


def config_markdown(cls: type[Config]) -> str:
    """The same keys as :func:`config_help`, as a markdown table (the README's key tables)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{r.key}` | `{cell(r.type)}` | `{cell(r.default)}` | {cell(plain(r.help, '`'))} |" for r in config_keys(cls)]
    return "\n".join(lines)


__all__ = ["load_job_config", "read_yaml", "apply_overrides", "field_type", "config_keys", "config_help",
           "config_markdown", "attribute_docs", "ConfigKey", "type_name"]
