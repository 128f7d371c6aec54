"""Site energy: the resource manager, its S2 mapping, and the allocation of a site's power."""
