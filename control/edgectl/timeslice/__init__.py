"""Time-slicing on the control side: policies, apply/status/off, the slot board, measurement."""
