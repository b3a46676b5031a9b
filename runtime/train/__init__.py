"""The shared training core every stack builds on.

Small modules, one job each, read in the order a training run uses them:

- ``precision``: which autocast dtype and whether a GradScaler is needed
  (bf16 on compute capability >= 8, fp16 + GradScaler below, fp32 on CPU);
- ``step``: backward with the scaler, gradient accumulation, clipping and an
  optimiser step that is skipped cleanly when no gradient exists;
- ``optim``: AdamW with parameter groups, cosine schedule with warm-up,
  partial fine-tuning;
- ``distributed``: DDP under ``torchrun``, samplers, gathering predictions;
- ``checkpoint``: atomic save, ``weights_only`` load, best-metric keeping, seeds;
- ``metrics``: CCC (Lin's) over a whole set, RMSE, Pearson, R², classification;
- ``curves``: loss and metrics per epoch to CSV and PNG;
- ``loop``: ``train_one_epoch``, ``collect_predictions`` and ``fit``.

Nothing here is imported by ``import runtime``; each module imports torch itself.
"""
