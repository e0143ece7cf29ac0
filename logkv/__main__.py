"""``python -m logkv``: the ``logkv`` command (see :mod:`logkv.cli.main`)."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
