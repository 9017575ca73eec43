"""``python -m ducto_redis``: the ``ducto-redis`` command.

``_load_pricing_file`` is ducto 1.0's name (``ducto.__main__._load_pricing_file``) for reading a
pricing file's raw dict, kept so code that imported it runs unchanged; it is
:func:`ducto_redis.config.read_pricing_file`.
"""

from __future__ import annotations

from .cli import main
from .config import read_pricing_file as _load_pricing_file

__all__ = ["_load_pricing_file", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
