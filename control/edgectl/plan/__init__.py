"""Hardware-aware sizing before buying a device: memory, speed, cost and energy of a recipe."""
