"""``es serve --config es.toml``: every ``es serve`` flag as a key of a TOML file and an
``ES_*`` environment variable (docs/operations.md, section 5).

The table of settings is derived from the options of the ``es serve`` command
itself, one row per flag, so a flag added to ``es serve`` gets its key and its
variable without an edit here: the key is the flag's name with ``_`` for ``-``,
in the section the first matching rule of :data:`SECTION_RULES` names; the
variable is ``ES_`` and the key in capitals.

Precedence is the command line's own: a flag, then its variable, then the file,
then the default. The ``--config`` option is eager: it is read before the other
options, gives each option its variable and hands the file's values to the
command line as its defaults, so that every later option resolves itself in
that order and remembers where its value came from.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Final, Protocol

import typer

from ..store import DURABILITY_MODES
from .access import CliError

__all__ = [
    "ConfigFile",
    "ConfigFileError",
    "ConfigOption",
    "Effective",
    "Setting",
    "apply_config_file",
    "check_effective",
    "effective",
    "load",
    "settings_of",
]

SECTION_RULES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("store", ("data",)),
    ("listeners", ("listen", "advertised_")),
    ("security", ("tls_", "ssl_", "sasl_", "super_user", "allow_everyone", "acl", "authorizer")),
    ("quotas", ("quota", "max_connections", "producer_byte", "consumer_byte", "request_percentage")),
    ("durability", ("durability", "fsync", "flush")),
    ("topics", ("auto_create", "default_", "num_partitions", "topic_")),
    ("groups", ("group_",)),
    ("retention", ("retention", "retain")),
    ("replication", ("replica", "min_insync", "coordinator", "cluster", "lease_")),
    ("http", ("http", "metrics", "console")),
    ("logging", ("log_", "slow_")),
)
"""A flag's section: the first rule one of whose prefixes starts its key; else ``server``."""
OTHER_SECTION: Final = "server"
SECRET_WORDS: Final = ("password", "secret")
"""A key holding one of these words is printed masked by ``es config check`` (but a key ending
in ``_env``: it names the variable that holds the secret, as ``replica_password_env``)."""
CONFIG_PARAMETER: Final = "config"
META_KEY: Final = "eventstore.config_file"


class ConfigFileError(CliError):
    """A configuration file, variable or flag the server cannot take; one line naming where."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the table: an ``es serve`` flag, its key in the file, its variable."""

    name: str
    """The option's parameter name (what the command receives)."""
    flag: str
    section: str
    key: str
    env: str
    kind: type
    """``str``, ``int``, ``float`` or ``bool``: what a value in the file must be."""
    choices: tuple[str, ...] | None
    multiple: bool
    default: Any

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.key}"


def section_of(key: str) -> str:
    for section, prefixes in SECTION_RULES:  # bounded by the rules
        if key.startswith(prefixes):
            return section
    return OTHER_SECTION


def settings_of(params: Iterable[Any]) -> list[Setting]:
    """The table for a command's parameters: one row per option but ``--config``."""
    rows = []
    for param in params:  # bounded by the command's options
        flags = [o for o in getattr(param, "opts", ()) if o.startswith("--")]
        if param.name == CONFIG_PARAMETER or not flags or getattr(param, "param_type_name", "") != "option":
            continue
        key = flags[0][2:].replace("-", "_")
        env = param.envvar if isinstance(param.envvar, str) else f"ES_{key.upper()}"
        kind, choices = _kind(param)
        rows.append(Setting(param.name, flags[0], section_of(key), key, env, kind, choices,
                            bool(param.multiple), param.default))
    return rows


def _kind(param: Any) -> tuple[type, tuple[str, ...] | None]:
    """What a file's value for ``param`` must be, and its choices when it has some."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", str)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return str, tuple(str(m.value) for m in annotation)
    if annotation in (bool, int, float):
        return annotation, None
    return str, None


# --- the file ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A configuration file read and checked against the table: values and lines by parameter."""

    path: str
    values: dict[str, Any]
    lines: dict[str, int | str]
    """Each value's line; ``?`` where the text did not show it."""

    def where(self, name: str) -> str:
        return f"{self.path}:{self.lines[name]}"


def load(path: str, table: list[Setting]) -> ConfigFile:
    """Read and check ``path``: an unknown section or key, or a value of the wrong type or
    outside its choices, is a :class:`ConfigFileError` naming the file's line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigFileError(f"{path}: cannot read the configuration file: {e.strerror}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        found = re.search(r"\(at line (\d+), column \d+\)", str(e))
        reason = str(e)[: found.start()].strip() if found else str(e)
        at = found.group(1) if found else "?"
        raise ConfigFileError(f"{path}:{at}: not valid TOML: {reason}") from None
    lines = key_lines(text)
    by_section: dict[str, dict[str, Setting]] = {name: {} for name, _ in SECTION_RULES}
    by_section[OTHER_SECTION] = {}
    for row in table:  # bounded by the table
        by_section.setdefault(row.section, {})[row.key] = row
    values: dict[str, Any] = {}
    where: dict[str, int | str] = {}
    for section, body in document.items():  # bounded by the file
        line: int | str = _line(lines, (section,))
        if not isinstance(body, dict) and section not in by_section:
            raise ConfigFileError(f"{path}:{line}: unknown key {section} outside any section"
                                  f"{_misplaced(section, '', table)}")
        if section not in by_section:
            hint = _suggest(section, by_section)
            raise ConfigFileError(f"{path}:{line}: unknown section [{section}]{hint}")
        if not isinstance(body, dict):
            raise ConfigFileError(f"{path}:{line}: {section} must be a table ([{section}]), got {body!r}")
        for key, value in body.items():  # bounded by the section
            line = _line(lines, (section, key))
            found_row = by_section[section].get(key)
            if found_row is None:
                hint = _misplaced(key, section, table)
                raise ConfigFileError(f"{path}:{line}: unknown key {section}.{key}{hint}")
            row = found_row
            problem = _type_problem(row, value)
            if problem:
                raise ConfigFileError(f"{path}:{line}: {row.dotted} {problem}")
            problem = value_problem(row, value)
            if problem:
                raise ConfigFileError(f"{path}:{line}: {row.dotted}: {problem}")
            values[row.name] = value
            where[row.name] = line
    return ConfigFile(path, values, where)


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line of each table header and key of a TOML text, by its dotted path (tomllib
    keeps no positions). Lines inside multi-line strings are skipped."""
    out: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):  # bounded by the text
        line = raw.strip()
        if in_string is not None:
            if line.count(in_string) % 2:
                in_string = None
            continue
        header = re.match(r"\[\[?\s*([^\]]+?)\s*\]\]?", line)
        if header:
            table = _path(header.group(1))
            out.setdefault(table, number)
            continue
        assignment = re.match(rf"({_KEY}(?:\s*\.\s*{_KEY})*)\s*=(.*)", line)
        if assignment:
            out.setdefault((*table, *_path(assignment.group(1))), number)
            for quotes in ('"""', "'''"):
                if assignment.group(2).count(quotes) % 2:
                    in_string = quotes
    return out


_KEY: Final = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
"""A TOML key: bare, or quoted in double or single quotes."""


def _path(dotted: str) -> tuple[str, ...]:
    parts = re.findall(r"""\s*("[^"]*"|'[^']*'|[^.]+)\s*(?:\.|$)""", dotted)
    return tuple(p.strip()[1:-1] if p.strip()[:1] in "\"'" else p.strip() for p in parts)


def _line(lines: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int | str:
    """The line of ``path``, else of its nearest parent (an inline table), else ``?``."""
    for end in range(len(path), 0, -1):  # bounded by the path's length
        if path[:end] in lines:
            return lines[path[:end]]
    return "?"


def _suggest(section: str, by_section: dict[str, dict[str, Setting]]) -> str:
    close = difflib.get_close_matches(section, list(by_section), n=1)
    known = ", ".join(sorted(by_section))
    return f" (did you mean [{close[0]}]?)" if close else f" (sections: {known})"


def _misplaced(key: str, section: str, table: list[Setting]) -> str:
    """A hint: the section the key belongs to, or the nearest key of this section."""
    home = [row.section for row in table if row.key == key]
    if home:
        return f" (it belongs in [{home[0]}])"
    close = difflib.get_close_matches(key, [row.key for row in table if row.section == section], n=1)
    return f" (did you mean {close[0]}?)" if close else ""


_KIND_WORDS: Final = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
_LIST_WORDS: Final = {str: "a list of strings", int: "a list of integers", float: "a list of numbers",
                      bool: "a list of true/false"}


def _type_problem(row: Setting, value: Any) -> str | None:
    """Why ``value`` from a file cannot be ``row``'s value; None when it can."""
    if row.multiple and not isinstance(value, list):
        return f"must be {_LIST_WORDS[row.kind]}, got {value!r}"
    for item in value if row.multiple else [value]:  # bounded by the value
        if not (type(item) is row.kind or (row.kind is float and type(item) is int)):
            want = _LIST_WORDS[row.kind] if row.multiple else _KIND_WORDS[row.kind]
            return f"must be {want}, got {value!r}"
        if row.choices is not None and item not in row.choices:
            return f"must be one of {', '.join(row.choices)}, got {item!r}"
    return None


def _durability(value: Any) -> str | None:
    if value in DURABILITY_MODES:
        return None
    return f"must be one of {', '.join(DURABILITY_MODES)}, got {value!r}"


def _address(value: Any) -> str | None:
    host, sep, port = str(value).rpartition(":")
    if sep and host and port.isdigit() and int(port) <= 65535:
        return None
    return f"must be 'HOST:PORT' with a port in 0..65535, got {value!r}"


def _addresses(value: Any) -> str | None:
    return next(filter(None, (_address(a.strip()) for a in str(value).split(","))), None)


VALUE_CHECKS: Final[dict[str, Callable[[Any], str | None]]] = {
    "durability": _durability,
    "listen": _address,
    "advertised_listener": _address,
    "replica_of": _addresses,
    "http": _address,
}
"""Checks of a value beyond its type, by parameter name, made before the server starts so
that a file's mistake is told with its line; the command checks the rest itself."""


def value_problem(row: Setting, value: Any) -> str | None:
    check = VALUE_CHECKS.get(row.name)
    if check is None or value is None:
        return None
    return check(value)


# --- the option and the effective configuration -----------------------------------------------------


def apply_config_file(ctx: typer.Context, value: str | None) -> str | None:
    """The eager ``--config`` option: give every option of the command its ``ES_*`` variable
    and the file's values as its defaults, before any of them is resolved."""
    table = settings_of(ctx.command.params)
    by_name = {row.name: row for row in table}
    for param in ctx.command.params:  # bounded by the command's options
        row = by_name.get(param.name or "")
        if row is not None and param.envvar is None:
            param.envvar = row.env
    if value is None:
        return None
    loaded = load(value, table)
    ctx.default_map = {**(ctx.default_map or {}), **loaded.values}
    ctx.meta[META_KEY] = loaded
    return value


ConfigOption = Annotated[str | None, typer.Option(
    "--config", envvar="ES_CONFIG", metavar="FILE", is_eager=True, callback=apply_config_file,
    help="A TOML file of settings, one key per flag (docs/operations.md, 5); flags and ES_* "
         "variables take precedence over it.")]


@dataclass(frozen=True, slots=True)
class Effective:
    """One setting's value and where it came from: ``flag --x``, ``env ES_X``, ``file F:N``, ``default``."""

    setting: Setting
    value: Any
    source: str


class Resolved(Protocol):
    """A command line context once its options are resolved (what ``make_context`` returns)."""

    @property
    def command(self) -> Any: ...

    @property
    def params(self) -> dict[str, Any]: ...

    @property
    def meta(self) -> dict[str, Any]: ...

    def get_parameter_source(self, name: str) -> Any: ...


def effective(ctx: Resolved) -> list[Effective]:
    """Every setting of a resolved command context, with its value's source."""
    loaded: ConfigFile | None = ctx.meta.get(META_KEY)
    out = []
    for row in settings_of(ctx.command.params):  # bounded by the table
        source = ctx.get_parameter_source(row.name)
        kind = source.name if source is not None else "DEFAULT"
        if kind == "COMMANDLINE":
            where = f"flag {row.flag}"
        elif kind == "ENVIRONMENT":
            where = f"env {row.env}"
        elif kind == "DEFAULT_MAP" and loaded is not None:
            where = f"file {loaded.where(row.name)}"
        else:
            where = "default"
        out.append(Effective(row, ctx.params.get(row.name), where))
    return out


def check_effective(settings: list[Effective]) -> None:
    """The value checks over every effective setting (the file's were made as it was read)."""
    for item in settings:  # bounded by the table
        problem = value_problem(item.setting, item.value)
        if problem:
            raise ConfigFileError(f"{item.source}: {item.setting.dotted}: {problem}")
