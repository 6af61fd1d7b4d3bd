"""Outcome tables: a study's declared endpoints computed as of a recorded time
(:mod:`projections.outcomes.engine`) from its subjects' outcome facts
(:mod:`projections.outcomes.facts`), with their statistics
(:mod:`projections.outcomes.statistics`)."""
