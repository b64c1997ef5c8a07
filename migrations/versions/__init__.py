"""Versioned revisions, one file each, applied in order from ``down_revision``."""
