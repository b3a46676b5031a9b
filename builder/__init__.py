"""The build side: a spec in, a verified bundle folder out, and the ways it leaves the machine.

Layers, each importing only the ones above it (tests/test_layering.py holds them):

    runtime                  the notebook side (builder may use its manifest and constants)
    errors, credentials,     base: error classes, secrets kept out of files and logs,
    artifact                 the spec's records
    store/  fetch/           content-addressed store; the download engine
    sources/  spec, layout,  where artifacts come from; spec loading; the bundle folder;
    verify, extras/          bundle checks; wheels and notebooks a bundle carries
    build/                   the build: plan, download, materialise
    publish/  image/         Kaggle dataset and archives; the CUDA Docker image
    cli                      `bundle`, a thin shell with lazy commands
"""

from pathlib import Path

#: The folder that holds builder/ and runtime/: a checkout's root, or site-packages.
SOURCE_ROOT = Path(__file__).resolve().parent.parent
