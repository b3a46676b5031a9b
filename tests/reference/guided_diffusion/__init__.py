"""guided-diffusion's networks (MIT), vendored as test fixtures: see LICENSE and each file's header."""
