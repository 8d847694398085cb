"""Score distillation (SDS) arithmetic shared by every diffusion prior, independent of any model library.

The pieces are kept apart from the model code so that each can be checked on its own:

- ``timestep``: the deterministic, "dreamtime-like" noise level of docs/method.md §2.3,
  ``τ = round((1 − step_ratio)·N)`` clipped to ``[N·t_min, N·t_max]``, one τ for the whole batch.
- ``camera_embedding``: the 4-vector Zero123 reads beside the CLIP token. Zero123-XL uses
  ``[Δpolar (rad), sin Δazimuth, cos Δazimuth, Δradius]``; Stable-Zero123 replaces the last entry by
  the conditioning view's absolute polar angle (rad), because it was trained at a fixed distance.
- ``orbit_to_zero123``: our orbit cameras (``model/object_camera.orbit_viewmat``) count elevation as
  positive *upwards*; Zero123's polar angle is measured from the up axis, so a camera that moves up has
  a *negative* Δpolar. Azimuth has the same sense in both (positive = the camera moves to its right).
- ``classifier_free``: ``ε̂ = ε_u + s·(ε_c − ε_u)``.
- ``sds_loss``: the reference formula. With ``g = w(τ)·(ε̂ − ε)``, ``w(τ) = 1 − ᾱ_τ`` and NaNs set to
  0, the loss is ``0.5·Σ (z − stopgrad(z − g))²``; its gradient with respect to the latents ``z`` is
  exactly ``g``, and autograd carries it through the VAE encoder into the rendered image.
"""

from __future__ import annotations

import math

import torch

VARIANTS = ("zero123-xl", "stable-zero123")


def timestep(step_ratio: float, t_range: tuple[float, float], num_train_timesteps: int = 1000) -> int:
    """The noise level for a training step at ``step_ratio`` ∈ [0, 1] (annealed from high to low)."""
    lo = int(num_train_timesteps * t_range[0])
    hi = int(num_train_timesteps * t_range[1])
    if not 0 <= lo <= hi < num_train_timesteps:
        raise ValueError(f"timestep range {t_range} is not inside [0, 1) of {num_train_timesteps} timesteps")
    t = round((1.0 - float(step_ratio)) * num_train_timesteps)
    return int(min(max(t, lo), hi))


def weight_at(abar: torch.Tensor) -> torch.Tensor:
    """w(τ) = 1 − ᾱ_τ: noisier levels get more weight (their scores are smaller)."""
    return 1.0 - abar


def sds_weight(alphas_cumprod: torch.Tensor, t: int) -> float:
    """w(τ) as a number, for logs and records.

    Reads one value into Python: pass a host copy of the schedule, since reading a CUDA tensor makes the
    host wait for every queued kernel."""
    return float(weight_at(alphas_cumprod[t]))


def orbit_to_zero123(offsets: torch.Tensor) -> torch.Tensor:
    """(…,3) orbit offsets (Δelevation° up-positive, Δazimuth°, Δradius) → Zero123's
    (Δpolar°, Δazimuth°, Δradius). Its own inverse."""
    return torch.stack([-offsets[..., 0], offsets[..., 1], offsets[..., 2]], -1)


def camera_embedding(deltas: torch.Tensor, variant: str, reference_polar_deg: float = 90.0) -> torch.Tensor:
    """(B,4) camera vectors for Zero123 deltas (B,3) = (Δpolar°, Δazimuth°, Δradius).

    ``reference_polar_deg`` is the conditioning view's polar angle from the up axis (90° = elevation 0),
    which only Stable-Zero123 reads. Computed on the device ``deltas`` are on (guidance keeps them on the
    host, where the renderer reads them too, and copies the result without waiting).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown Zero123 variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    d = deltas.double()
    polar = torch.deg2rad(d[:, 0])
    az = torch.deg2rad(d[:, 1])
    if variant == "zero123-xl":
        last = d[:, 2]
    else:
        last = torch.full_like(polar, math.radians(reference_polar_deg))
    return torch.stack([polar, torch.sin(az), torch.cos(az), last], -1).float()


def add_noise(latents: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The forward process q(z_τ | z): ``sqrt(ᾱ_τ)·z + sqrt(1 − ᾱ_τ)·ε`` (DDPM/DDIM's add_noise), with ``abar``
    the 0-dim ``ᾱ_τ`` where the latents are (a tensor, so that a replayed CUDA graph reads this call's)."""
    a = abar.to(latents.dtype)
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def classifier_free(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: push the prediction away from the unconditional one by ``scale``."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def sds_gradient(eps_hat: torch.Tensor, noise: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """g = w·(ε̂ − ε) in float32, NaNs (and infinities) set to 0."""
    g = weight * (eps_hat.float() - noise.float())
    return torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)


def sds_loss(latents: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5·Σ (z − stopgrad(z − g))², summed over batch and latent elements; d loss / d z = g."""
    z = latents.float()
    target = (z - grad.float()).detach()
    return 0.5 * (z - target).pow(2).sum()
