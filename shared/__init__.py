"""The project's kit: only what at least two services use."""
