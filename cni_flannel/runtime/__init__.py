"""The runtime side of the spec (libcni): config loading, chaining, the result cache."""
