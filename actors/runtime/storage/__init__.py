"""Durable state in SQLite files: object trees, blobs, samples."""
