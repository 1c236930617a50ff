"""Small shared utilities (atomic output, progress, subprocess helpers)."""
