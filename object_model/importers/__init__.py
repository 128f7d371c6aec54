"""Importers that map other standards' object models into namespaced parts of ours."""
