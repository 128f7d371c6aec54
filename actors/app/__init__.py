"""The application: command line, configuration, wiring, client, demo, metrics. Nothing below imports it."""
