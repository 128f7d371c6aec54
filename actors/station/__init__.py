"""The charging-station actor and its simulated hardware."""
