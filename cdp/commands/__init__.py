"""The verbs of the `cdp` command: one module per verb, each with ``register(subparsers)``.

A verb module only turns arguments into a call of the library (the
journal, :mod:`cdp.service`, :mod:`cdp.attach`, ...) and its result into
output; ``ORDER`` places the verb in ``cdp --help``. Helpers shared by the
verbs are in :mod:`cdp.commands._common`.
"""
