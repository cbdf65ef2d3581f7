"""``es config check FILE``: the effective ``es serve`` configuration and where each value
came from, without starting a server (docs/operations.md, section 5)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from typer.main import get_command

from . import serve as serve_cli
from .config_file import OTHER_SECTION, SECRET_WORDS, SECTION_RULES, Effective, check_effective, effective

config_app = typer.Typer(help="Check an es serve configuration file.", no_args_is_help=True)


@config_app.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def check(
    file: Annotated[str, typer.Argument(metavar="FILE", help="The TOML file es serve --config would read.")],
    serve_flags: Annotated[list[str] | None, typer.Argument(
        metavar="[SERVE FLAGS]...", help="es serve flags to apply over the file, as es serve would.")] = None,
) -> None:
    """Validate FILE and print the effective configuration, one key per es serve flag, each
    with its source (flag, env, file:line or default); the output is itself a valid file.

    Exit status 1 with one line naming the file and line of the first mistake.
    """
    command = get_command(_serve_only())
    ctx = command.make_context("serve", ["--config", file, *(serve_flags or [])])
    settings = effective(ctx)
    check_effective(settings)
    typer.echo(render(settings))


def _serve_only() -> typer.Typer:
    """An application holding just ``es serve``: its command resolves options as ``es serve`` does."""
    app = typer.Typer(add_completion=False)
    app.command()(serve_cli.serve)
    return app


def render(settings: list[Effective]) -> str:
    """The settings as TOML by section (in the documentation's order), each value followed by
    its source as a comment; a setting with no value is a comment, a secret is masked."""
    lines: list[str] = []
    order = [name for name, _ in SECTION_RULES] + [OTHER_SECTION]
    sections = sorted({item.setting.section for item in settings}, key=order.index)
    for section in sections:  # bounded by the table
        lines.append(f"\n[{section}]" if lines else f"[{section}]")
        for item in settings:  # bounded by the table
            if item.setting.section != section:
                continue
            if item.value is None or (item.setting.multiple and not item.value):
                lines.append(f"# {item.setting.key} is not set  # {item.source}")
                continue
            lines.append(f"{item.setting.key} = {_toml(item.setting.key, item.value)}  # {item.source}")
    return "\n".join(lines)


def _toml(key: str, value: Any) -> str:
    if any(word in key for word in SECRET_WORDS) and not key.endswith("_env"):
        return '"***"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(key, v) for v in value) + "]"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))
