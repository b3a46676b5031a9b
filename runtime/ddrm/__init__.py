"""DDRM image restoration (Kawar et al. 2022), offline and on any device.

One job per module, in the spirit of openai/guided-diffusion:

- ``unet``: the ADM UNet of guided-diffusion, blocks and state-dict keys as published;
- ``classifier``: the noisy ImageNet classifier (ADM encoder half + attention pool);
- ``ddpm``: the CelebA-HQ DDPM (diffusers ``UNet2DModel`` from ``google/ddpm-celebahq-256``);
- ``ddrm_model``: the DDPM network of DDRM's own repository, for its ``celeba_hq.ckpt``;
- ``operators``: degradations H written as their SVD (denoise, inpaint, SR, deblur, colour, CS);
- ``degradations``: the ``--deg`` names and their kernels, masks and factors (``make_operator``);
- ``sampler``: the DDRM sampler and classifier guidance (the maths, apart from the networks);
- ``configs``: the three published configurations and the guided-diffusion flag parser;
- ``checkpoints``: safe loading (``weights_only=True`` / safetensors) with clear errors;
- ``key_manifest``: the checkpoint key set and shapes, derived from the published architecture;
- ``reference``: ``--reference-compat``, the reference code's operators and sampler, quirks included;
- ``restore``: the restoration pipeline behind ``bundle run ddrm restore``.

Nothing heavy is imported here: torch is imported by the modules that need it.
"""
