"""cdp: continuous data protection for Linux block devices."""
