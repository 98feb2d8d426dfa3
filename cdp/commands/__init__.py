"""Subcommands of the `cdp` command: one module per verb group, each with `register(subparsers)`."""
