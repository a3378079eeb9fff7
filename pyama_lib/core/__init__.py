"""What every part of the library shares: its errors, the base of its typed parameters, and
what a run selects (stages, channels, FOVs)."""
