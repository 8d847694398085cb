"""Optimizers that fit the model to the clip, and their losses."""
