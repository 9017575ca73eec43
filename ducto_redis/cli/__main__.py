"""``python -m ducto_redis.cli``: the ``ducto-redis`` command."""

import sys

from . import main

sys.exit(main())
