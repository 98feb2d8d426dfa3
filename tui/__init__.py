"""The terminal UI for browsing rewind points and restoring."""
