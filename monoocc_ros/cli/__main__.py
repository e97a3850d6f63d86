"""``python -m monoocc_ros.cli``: the ``monoocc`` command without its console script."""

import sys

from monoocc_ros.cli import main

if __name__ == "__main__":  # module walkers (doctest, import checks) import this file too
    sys.exit(main())
