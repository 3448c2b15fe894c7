"""Build a typer command from a :class:`micota.config.StageConfig`.

The config's fields become the flags (``max_new_tokens`` -> ``--max-new-tokens``; bools get
``--x/--no-x``; ``Field(json_schema_extra={"cli_flag": "name"})`` renames a flag; lists are
comma-separated (``{"cli_repeat": True}``: the flag may also be repeated); Literal fields list their choices in the help), plus
``--config FILE.yaml`` whose keys are the same field names. Precedence: flags > YAML > defaults.
So one class is the Python API, the CLI and the YAML schema, as TRL does with its dataclasses.

One flag vocabulary: ``use_chat_template`` is ``--chat-template/--no-chat-template`` everywhere;
a command may rename a flag (``flags={"probe": "problems"}``). An old spelling stays accepted,
hidden, with a ``warning: … is deprecated`` line (:data:`DEPRECATED_UNTIL`). Every command follows
:func:`micota.rerun.check_rerun` before running and has ``--overwrite``. Validation errors name
flags (``--n: …``), or the YAML key with a "did you mean" for a near miss.
"""

from __future__ import annotations

import difflib
import inspect
import json
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from micota.config import StageConfig, load_yaml
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


# canonical flag names shared by every command (field -> flag); the field's own name stays a deprecated alias
FLAG_NAMES = {"use_chat_template": "chat_template"}
DEPRECATED_UNTIL = "micota 0.2"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(value: Any) -> str:
    """How a default reads in ``--help``: lists comma-joined, bools on/off, no Python reprs."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple, set)):
        return ",".join(str(v) for v in value) or "none"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def help_default(value: Any) -> str:
    return "" if value is None else f" [default: {_default_text(value)}]"


def warn_deprecated(old: str, new: str) -> None:
    print(f"warning: {old} is deprecated, use {new} (the old spelling is accepted until {DEPRECATED_UNTIL})",
          file=sys.stderr, flush=True)


def did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _option_param(name: str, cli_t: Any, decl: list[str], help_text: str, *, hidden: bool = False) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[cli_t | None, typer.Option(*decl, help=help_text, show_default=False,
                                                                             hidden=hidden)])


def _decl(flag: str, is_bool: bool) -> list[str]:
    return [f"{_flag(flag)}/--no-{flag.replace('_', '-')}"] if is_bool else [_flag(flag)]


def build_config(cls: type[StageConfig], config_file: Path | None, values: dict[str, Any],
                 flag_of: dict[str, str]) -> StageConfig:
    """YAML + flag values -> config; a validation error names the flag (or the YAML key) that caused it."""
    data: dict[str, Any] = load_yaml(config_file) if config_file else {}
    data.update(values)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(x) for x in err["loc"]]
        key = loc[0] if loc else ""
        where = flag_of.get(key, _flag(key))
        if err.get("type") == "extra_forbidden":
            raise UserError(f"{config_file}: unknown key {'.'.join(loc)!r}"
                            f"{did_you_mean(key, list(cls.model_fields))}") from None
        if err.get("type") == "missing":
            raise UserError(f"missing {where}" + (f" (or key {key!r} in {config_file})" if config_file else "")) from None
        if key not in values and config_file:
            where = f"{config_file}: {'.'.join(loc)}"
        elif len(loc) > 1:
            where += "[" + ".".join(loc[1:]) + "]"
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        raise UserError(f"{where}: {err['msg']}{got}") from None


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
    flags: dict[str, str] | None = None,
    deprecated: dict[str, list[str]] | None = None,
    stage: str | None = None,
    resumable: bool = False,
    rerun_ignore: tuple[str, ...] = (),
    rerun_extend: tuple[str, ...] = (),
    on_skip: Callable[[Any], None] | None = None,
) -> None:
    """Register ``name`` on ``app``: parse flags/YAML into ``cls`` and call ``fn(config)``.

    ``positional`` fields become arguments in that order. ``on_result`` prints the result.
    ``flags`` renames flags; ``deprecated`` adds old spellings per field. The rerun rule
    (:func:`micota.rerun.check_rerun`) runs first with ``stage`` (default: the command name);
    ``on_skip(config)`` prints what a skipped run would have printed (default: its output path).
    """
    params: list[inspect.Parameter] = []
    converters: dict[str, Callable[[Any], Any]] = {}
    flag_of: dict[str, str] = {}
    old_flags: dict[str, tuple[str, str]] = {}  # param name -> (field, old flag)
    fields: dict[str, FieldInfo] = cls.model_fields
    for fname in positional:
        f = fields[fname]
        cli_t, suffix, conv = _cli_type(f.annotation)
        converters[fname] = conv
        flag_of[fname] = fname.upper()
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
        default_txt = "" if f.is_required() else help_default(f.get_default(call_default_factory=True))
        flag = (flags or {}).get(fname) or extra.get("cli_flag") or FLAG_NAMES.get(fname, fname)
        flag_of[fname] = _flag(flag)
        params.append(_option_param(fname, cli_t, _decl(flag, cli_t is bool), (f.description or "") + suffix + default_txt))
        olds = [o for o in dict.fromkeys([fname, FLAG_NAMES.get(fname, fname), *(deprecated or {}).get(fname, [])]) if o != flag]
        for j, old in enumerate(olds):
            pname = f"{fname}__old{j}"
            old_flags[pname] = (fname, _flag(old))
            params.append(_option_param(pname, cli_t, _decl(old, cli_t is bool), f"Deprecated: {_flag(flag)}.", hidden=True))
    has_overwrite = "overwrite" in fields
    if not has_overwrite and "out" in fields:
        params.append(_option_param("overwrite", bool, ["--overwrite"],
                                    "Replace a finished output made with another config (or recompute it)."))
    params.append(
        inspect.Parameter(
            "config_file",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[Path | None, typer.Option("--config", help="YAML file whose keys are these options' field names (flags win).")],
        )
    )

    def command(**kwargs: Any) -> None:
        config_file = kwargs.pop("config_file", None)
        overwrite = bool(kwargs.pop("overwrite", None))
        for pname, (fname, old) in old_flags.items():
            v = kwargs.pop(pname, None)
            if v is not None:
                warn_deprecated(old, flag_of[fname])
                if kwargs.get(fname) is None:
                    kwargs[fname] = v
        values = {k: converters[k](v) for k, v in kwargs.items() if v is not None}
        cfg = build_config(cls, config_file, values, flag_of)
        from micota.rerun import check_rerun

        if check_rerun(getattr(cfg, "out", None), cfg, stage=stage or name.replace("-", "_"),
                       overwrite=bool(getattr(cfg, "overwrite", False) or overwrite), resumable=resumable,
                       ignore=rerun_ignore, extend=rerun_extend):
            (on_skip or (lambda c: typer.echo(str(c.out))))(cfg)
            return
        result = call_locked(fn, cfg)  # one writer per output
        if on_result is not None:
            on_result(result)
        elif result is not None:
            typer.echo(str(result))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = name.replace("-", "_")
    command.__doc__ = help or (fn.__doc__ or "").strip().split("\n\n")[0]
    app.command(name, help=command.__doc__)(command)
