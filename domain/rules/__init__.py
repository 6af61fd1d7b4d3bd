"""Clinical rules: pure functions that validate inputs and derive values with their method."""
