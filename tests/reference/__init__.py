"""Reference implementations the tests compare against (each with its licence)."""
