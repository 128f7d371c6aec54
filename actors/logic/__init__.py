"""Pure logic: no I/O, no clock, no asyncio (the layer test holds them to it)."""
