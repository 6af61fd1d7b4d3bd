"""`trialledger validate`: installation and operational qualification of a live deployment,
in a disposable study of its own, with a signed report (HTML, PDF) that `verify --bundle`
accepts. One module per group of checks (:mod:`.installation`, :mod:`.operational`), the run
(:mod:`.run`) and the report (:mod:`.report`)."""
