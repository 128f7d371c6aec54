"""Actors: charging stations, resource manager, local and cloud CSMS, and the command line."""
