"""What a run leaves behind: metrics files, W&B set-up and its offline log."""
