"""The stack record of an emotion stack (emotion-vit, emotion-ast): one shape for both.

``train`` loads the backbone (``--model``: another artifact, or a local folder);
``evaluate`` and ``predict`` rebuild the model from the checkpoint and load nothing.
Not a stack itself (the leading underscore keeps it out of ``list_stacks``).
"""

from __future__ import annotations

import click

from runtime.emotion.commands import make_cli
from runtime.emotion.model import EmotionStack
from runtime.stacks.record import Need, register_stack


def emotion_stack(stack: EmotionStack, *, summary: str, doc: str) -> click.Group:
    """Register ``stack``'s train/evaluate/predict group; ``doc``'s first paragraph is its help."""
    return register_stack(
        stack.name, summary=summary,
        needs=(Need("backbone", (stack.default_model,), ("train",), option="model"),),
        docs="docs/emotion.md",
        inference="predict --checkpoint {checkpoint} {data} --format csv --output {out}/predictions.csv",
    )(make_cli(stack, doc=doc.split("\n\n")[0]))
