"""``python -m trialledger_verifier``: the same as ``trialledger-verify``."""

import sys

from trialledger_verifier.cli import main

sys.exit(main())
