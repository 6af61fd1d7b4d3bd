"""The offline verifier of TrialLedger bundles: the standard library and ``cryptography`` only,
so a regulator can install it (``trialledger-verifier``) without the server."""

from trialledger_verifier.bundle import BundleInvalid, BundleReport, load_public_keys, verify_bundle

__all__ = ["BundleInvalid", "BundleReport", "load_public_keys", "verify_bundle"]

# The verifier package's version (verifier/pyproject.toml reads it from here).
__version__ = "0.1.0"
