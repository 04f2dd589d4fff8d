"""The user's path end to end: `faultline init`, then pytest on what it wrote."""
