"""The outside face of TrialLedger: the HTTP API and the ``trialledger`` CLI."""
