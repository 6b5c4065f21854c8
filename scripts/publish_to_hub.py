"""Publish an export folder to the Hugging Face Hub (see docs/export.md):

    python scripts/publish_to_hub.py EXPORT_DIR --repo-prefix ORG/NAME [--private] [--revision BRANCH] [--dry-run]

creates or updates ORG/NAME-discriminator and ORG/NAME-generator, one commit each, with a model
card; EXPORT_DIR may also be the distill stage's student folder (<distill>/model), published as
ORG/NAME with a card naming its teacher. The token comes from HF_TOKEN or `hf auth login`; --dry-run prints the plan and uses no network.
"""

import sys

from koelectra_dist.export.hub import main

if __name__ == "__main__":
    sys.exit(main())
