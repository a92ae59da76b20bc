"""Operating it: the morning summary, halt history, replay and `doctor`."""
