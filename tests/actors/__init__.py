"""Tests of the actors layer."""
