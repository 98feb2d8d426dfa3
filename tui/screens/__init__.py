"""Screens and modal screens of the TUI, one module each."""
