"""Copies of other actors' trees: publishing changes, keeping copies, resynchronising."""
