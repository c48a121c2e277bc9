"""``python -m diffcut_gpu ...`` and ``torchrun -m diffcut_gpu segment ...``: the ``diffcut-gpu`` command."""

import sys

from diffcut_gpu.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
