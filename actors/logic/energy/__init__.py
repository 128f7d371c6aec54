"""Site energy, pure: the allocation, its references, the S2 mapping, a simulated site day."""
