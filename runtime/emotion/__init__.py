"""What the emotion stacks share: valence/arousal regression on songs (DEAM layout).

A stack (emotion-vit, emotion-ast) describes only what differs, in an
:class:`~runtime.emotion.model.EmotionStack`: how audio becomes features and how the
backbone is built (:mod:`.vit`, :mod:`.audio_transformer`). The rest reads top to bottom:

    model      the regression head, EmotionStack, loading backbones and trained models
    recipe     precision + DDP -> songs and split -> features cached once -> backbone
               from the bundle + head -> AdamW groups, cosine warm-up -> fit (CCC selection)
    commands   the train / evaluate / predict click group of a stack

Shared runtime code: imports runtime.train, runtime.data and the runtime core, never a
stack (runtime.distill uses the trained emotion-vit as its teacher).
"""
