"""The actor runtime: the actor base, clock, tree actor, storage, replication and shared services."""
