"""Run the koelectra_dist pipeline: `python launch.py --config configs/base_v3.json [STAGE ...]`.

The same command as the installed `koelectra-dist` (koelectra_dist/cli.py); this wrapper lets
`ray job submit --working-dir . -- python launch.py ...` run it without installing the package.
"""

import sys

from koelectra_dist.cli import main

if __name__ == "__main__":
    sys.exit(main())
