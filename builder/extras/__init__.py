"""What a bundle carries besides models, made during the build: a wheelhouse for offline
``pip install`` (``[wheels]``, :mod:`.wheels`), wheels of this project's runtime
(:mod:`.runtime_wheels`, also baked into images), and starter notebooks
(:mod:`.notebooks`). Imports builder.errors, builder.credentials and runtime only.
"""
