"""Reading a configuration file (pricing, routes): JSON, or YAML when PyYAML is installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConfigError


def load_mapping(path: str | Path, what: str = "file", holds: str = "") -> dict[str, Any]:
    """A mapping from a JSON file, or a YAML file (``.yaml``/``.yml``) when PyYAML is installed.

    Raises :class:`ConfigError` with a one-line reason (missing file, bad syntax, not a mapping;
    an unreadable file's ``OSError`` is its ``__cause__``, so a command can exit with its own code);
    ``what`` names the file's kind (``"pricing file"``), ``holds`` what the mapping holds.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {name}: {exc.strerror or exc}") from exc
    if name.endswith((".yaml", ".yml")):
        try:
            import yaml  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError(f"{name} is YAML, and reading YAML needs PyYAML (pip install pyyaml); "
                              "or give the same content as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name} is not valid YAML: {exc}") from exc
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{name} must hold a mapping{holds}, not {type(data).__name__}")
    return data
