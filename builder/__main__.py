"""``python -m builder`` is the ``bundle`` command."""

from builder.cli import main

main(prog_name="bundle")
