"""A charging station's physics and PEBC mapping, as pure functions of its tree and time."""
