"""Priors computed from the clip before fitting: optical flow (and later depth and diffusion guidance)."""
