"""Study definitions, as data."""
