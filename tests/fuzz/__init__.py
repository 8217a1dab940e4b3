"""Property-based fuzzing of every RPC on the real stack: ``make fuzz``, and in ``make test``."""
