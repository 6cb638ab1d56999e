"""Analyses of the seed paper as commands: query-target alignment, per-layer quality, data-scale sweeps."""
