"""What a run reports: the console table, W&B tracking, compute and utilisation accounting."""
