"""Helpers the tests of several parts share, imported by the tests that use them.

Kept apart from the ``conftest.py`` files (which hold fixtures only), so a
helper has one home and its users import it by name.
"""
