"""What the optimizer fits: cameras, per-object tracks from masks, canonical Gaussians, their motion."""
