"""Reading a configuration file (pricing, routes): JSON, or YAML when PyYAML is installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConfigError


def load_mapping(path: str | Path) -> dict[str, Any]:
    """A mapping from a JSON file, or a YAML file (``.yaml``/``.yml``) when PyYAML is installed.

    Raises :class:`ConfigError` with a one-line reason (missing file, bad syntax, not a mapping).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if p.suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError(f"{path} is YAML, and reading YAML needs PyYAML (pip install pyyaml); "
                              "or give the same content as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping, not {type(data).__name__}")
    return data
