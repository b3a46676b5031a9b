"""``bundle build``: spec -> resolved plan -> verified blobs in the store -> bundle folder.

The steps, in the order they run:

1. load and validate the spec (:mod:`builder.spec`);
2. resolve every artifact with its source (revision -> commit, file list,
   expected hashes). A rerun reuses the plan recorded beside the bundle
   (``OUT/.NAME.resolved.json``) when the artifact's spec entry is unchanged, so it
   asks no server anything; ``refresh=True`` re-resolves (e.g. to move to the
   Hub's newest ``main``);
3. fetch every planned file into the content-addressed store, in parallel
   (``jobs`` threads), verified before it gets its name; files already in the
   store cost one ``stat``;
4. materialise the bundle in a staging folder by hard links from the store, add
   wheels/notebooks, write bundle.json, dataset-metadata.json and README.md, and
   swap it in under ``OUT/NAME`` (:mod:`builder.layout`).

A failing artifact stops the build before step 4: the previous bundle (if any)
stays as it was, and nothing of the failing artifact is in the bundle or the
store (files are added to the store only after verification).

Modules, in the order the steps run: ``plan`` (steps 1-2 and the checks),
``download`` (3), ``materialise`` (4), ``run`` (build() running them),
``resolved`` and ``report`` (the records). The build imports the spec, sources,
fetch, store and layout; nothing below it imports the build.
"""

from builder.pipeline.report import BuildReport
from builder.pipeline.resolved import lock_path
from builder.pipeline.run import build, build_bundle

__all__ = ["BuildReport", "build", "build_bundle", "lock_path"]
