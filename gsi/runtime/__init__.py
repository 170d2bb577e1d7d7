"""The runtime: problem state, the calls a method awaits, the driver that batches them, seeding."""
