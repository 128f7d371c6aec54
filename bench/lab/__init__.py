"""The researcher's lab: the broker hierarchy against point-to-point OCPP on the same scenarios
and the same impaired links (docs/lab.md). ``csms lab run SCENARIO.toml`` runs a scenario on
both architectures and leaves a run directory; ``csms lab report RUN_DIR`` renders its plots
and report from the data alone."""
