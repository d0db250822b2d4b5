"""``python -m lib.report build --params params.yaml``: the report stage (lib.report.build)."""

import sys

from .build import main

if __name__ == "__main__":
    sys.exit(main())
