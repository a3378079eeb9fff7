"""Looking at processed FOVs in napari (the optional ``[view]`` extra): ``pyama view``."""
