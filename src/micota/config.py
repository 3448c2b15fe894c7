"""Typed configs: one pydantic model per stage is at once the Python API, the CLI flags and the
YAML keys (field ``max_new_tokens`` is ``--max-new-tokens`` and YAML key ``max_new_tokens``).

:class:`StageConfig` forbids unknown keys, so a typo in a YAML file or pipeline is an error that
names the key. :meth:`StageConfig.config_hash` hashes the resolved config (every field, defaults
included) and is what stage outputs and cache keys record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from micota.errors import UserError
from micota.io import dumps_canonical, sha256_text

C = TypeVar("C", bound="StageConfig")


def format_validation_error(e: ValidationError, *, prefix: str = "") -> str:
    """One line naming the first offending key, e.g. ``stages.train.lr: Input should be a number``."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    key = ".".join(x for x in (prefix, loc) if x)
    msg = err["msg"]
    if err.get("type") == "extra_forbidden":
        msg = "unknown key"
    return f"{key or 'config'}: {msg}"


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=True)

    def config_hash(self, *, exclude: set[str] | None = None) -> str:
        """sha256 (first 16 hex) of the canonical JSON of the resolved config."""
        data = self.model_dump(mode="json", exclude=exclude or set())
        return sha256_text(dumps_canonical({"type": type(self).__name__, **data}))[:16]

    @classmethod
    def build(cls: type[C], data: dict[str, Any], *, prefix: str = "") -> C:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise UserError(format_validation_error(e, prefix=prefix)) from None


MAX_YAML_VALUES = 1_000_000  # values after alias expansion: an "alias bomb" stops here, before validation


def _expanded_size(data: Any, path: Path) -> int:
    """Number of values ``data`` holds once aliases are expanded (shared objects counted per use,
    memoised, so the count itself is linear in the file); a recursive alias is an error."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(v: Any) -> int:
        if not isinstance(v, (dict, list)):
            return 1
        k = id(v)
        if k in memo:
            return memo[k]
        if k in active:
            raise UserError(f"{path}: recursive YAML alias")
        active.add(k)
        items = list(v.keys()) + list(v.values()) if isinstance(v, dict) else v
        n = 1
        for x in items:
            n += size(x)
            if n > MAX_YAML_VALUES:
                raise UserError(f"{path}: expands to more than {MAX_YAML_VALUES:,} values (YAML aliases?)")
        active.discard(k)
        memo[k] = n
        return n

    try:
        return size(data)
    except RecursionError:
        raise UserError(f"{path}: YAML nested too deeply") from None


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise UserError(f"{path}: YAML nested too deeply") from None
    _expanded_size(data, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level")
    return data


def load_config(cls: type[C], path: str | os.PathLike | None = None, **overrides: Any) -> C:
    """YAML file (optional) + keyword overrides -> validated config. Overrides win."""
    data: dict[str, Any] = load_yaml(path) if path else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return cls.build(data, prefix=str(path) if path else "")
