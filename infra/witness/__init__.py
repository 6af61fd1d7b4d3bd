"""A checkpoint witness (C2SP tlog-witness): its own key, its own state directory."""
