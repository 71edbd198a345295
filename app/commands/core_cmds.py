"""Core commands: train, convex, data."""
