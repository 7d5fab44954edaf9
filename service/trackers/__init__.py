"""Experiment trackers fed by a run's events (optional extras): `weights_and_biases.py`."""
