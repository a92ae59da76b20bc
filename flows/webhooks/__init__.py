"""The webhook receiver and what it starts."""
