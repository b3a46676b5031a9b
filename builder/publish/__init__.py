"""Ways a built bundle leaves this machine: a Kaggle dataset (``bundle publish``) and one
archive (``bundle pack`` / ``unpack``, e.g. for Colab's Drive).

Both check the bundle first and refuse to send a credential of this machine
(:mod:`.checks`, builder.credentials). Imports builder.credentials, builder.layout,
builder.store and runtime; the build never imports this package.
"""
