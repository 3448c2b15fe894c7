"""Build a typer command from a :class:`micota.config.StageConfig`.

The config's fields become the flags (``max_new_tokens`` -> ``--max-new-tokens``; bools get
``--x/--no-x``; ``Field(json_schema_extra={"cli_flag": "name"})`` renames a flag; lists are
comma-separated (``{"cli_repeat": True}``: the flag may also be repeated); Literal fields list their choices in the help), plus
``--config FILE.yaml`` whose keys are the same field names. Precedence: flags > YAML > defaults.
So one class is the Python API, the CLI and the YAML schema, as TRL does with its dataclasses.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import typer
from pydantic.fields import FieldInfo

from micota.config import StageConfig, load_config
from micota.errors import UserError
from micota.io import call_locked


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _cli_type(tp: Any) -> tuple[Any, str, Callable[[Any], Any]]:
    """(type typer parses, help suffix, converter to the config's value)."""
    tp = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        conv_t = type(choices[0])
        return conv_t, " [" + "|".join(str(c) for c in choices) + "]", lambda v: v
    if origin in (list, tuple, set):
        return str, " (comma-separated)", lambda v: [x.strip() for x in v.split(",") if x.strip()]
    if origin is dict or tp is dict:
        def parse_json(v: str) -> Any:
            try:
                return json.loads(v)
            except json.JSONDecodeError as e:
                raise UserError(f"expected a JSON object, got {v!r} ({e.msg})") from None
        return str, " (JSON object)", parse_json
    if tp in (str, int, float, bool, Path):
        return tp, "", lambda v: v
    return str, "", lambda v: v


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_command(
    app: typer.Typer,
    name: str,
    cls: type[StageConfig],
    fn: Callable[[Any], Any],
    *,
    positional: tuple[str, ...] = (),
    help: str | None = None,
    on_result: Callable[[Any], None] | None = None,
    exclude: tuple[str, ...] = (),
) -> None:
    """Register ``name`` on ``app``: parse flags/YAML into ``cls`` and call ``fn(config)``.

    ``positional`` fields become arguments in that order. ``on_result`` prints the result.
    """
    params: list[inspect.Parameter] = []
    converters: dict[str, Callable[[Any], Any]] = {}
    fields: dict[str, FieldInfo] = cls.model_fields
    for fname in positional:
        f = fields[fname]
        cli_t, suffix, conv = _cli_type(f.annotation)
        converters[fname] = conv
        required = f.is_required()
        params.append(
            inspect.Parameter(
                fname,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=... if required else None,
                annotation=Annotated[cli_t | None if not required else cli_t, typer.Argument(help=(f.description or "") + suffix, show_default=False)],
            )
        )
    for fname, f in fields.items():
        if fname in positional or fname in exclude:
            continue
        cli_t, suffix, conv = _cli_type(f.annotation)
        extra = (f.json_schema_extra if isinstance(f.json_schema_extra, dict) else None) or {}
        if extra.get("cli_repeat"):  # --flag a --flag b (or --flag a,b)
            cli_t, suffix = list[str], " (repeatable or comma-separated)"
            conv = lambda v: [x.strip() for item in v for x in item.split(",") if x.strip()] or None  # noqa: E731
        converters[fname] = conv
        default_txt = "" if f.is_required() else f" [default: {f.get_default(call_default_factory=True)!r}]"
        flag = extra.get("cli_flag", fname)
        decl = [f"{_flag(flag)}/--no-{flag.replace('_', '-')}"] if cli_t is bool else [_flag(flag)]
        params.append(
            inspect.Parameter(
                fname,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[cli_t | None, typer.Option(*decl, help=(f.description or "") + suffix + default_txt, show_default=False)],
            )
        )
    params.append(
        inspect.Parameter(
            "config_file",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[Path | None, typer.Option("--config", help="YAML file whose keys are these flags' names (flags win).")],
        )
    )

    def command(**kwargs: Any) -> None:
        config_file = kwargs.pop("config_file", None)
        values = {k: converters[k](v) for k, v in kwargs.items() if v is not None}
        cfg = load_config(cls, config_file, **values)
        result = call_locked(fn, cfg)  # one writer per output
        if on_result is not None:
            on_result(result)
        elif result is not None:
            typer.echo(str(result))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = name.replace("-", "_")
    command.__doc__ = help or (fn.__doc__ or "").strip().split("\n\n")[0]
    app.command(name, help=command.__doc__)(command)
