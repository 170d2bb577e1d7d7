"""The step loop: problem state, the scheduler, seeding, concurrency."""
