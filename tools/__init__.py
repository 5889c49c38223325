"""Developer tools run by make targets (stub generation, contract guards)."""
