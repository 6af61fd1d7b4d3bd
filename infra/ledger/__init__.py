"""The tamper-evident ledger: an RFC 9162 Merkle log of each study's events, signed checkpoints."""
