"""DDRM's reference code (MIT), vendored as test fixtures: see LICENSE and each file's header."""
