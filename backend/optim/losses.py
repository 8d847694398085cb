"""Loss terms of the fit. Each takes rendered and target tensors and returns a scalar."""

from __future__ import annotations

import torch


def balanced_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, band_px: int = 0,
                 also_near: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error averaged separately near and far from ``mask``, then summed.

    pred/target (B,H,W) or (B,H,W,C); mask (B,H,W) bool. Balancing keeps small objects from being
    outweighed by the much larger empty area around them. With ``band_px`` = 0 (the spec's
    BalancedMSE) "near" is the mask itself: every pixel inside then weighs (outside area / inside
    area) times more than one just outside, so a soft silhouette edge is pushed outwards and
    renders spill over thin objects. With ``band_px`` > 0, the pixels within that many pixels of the
    mask count with the inside pixels, so the edge itself sees an unweighted MSE and stays where the
    mask puts it, while the far background is still balanced apart. ``also_near`` (B,H,W) bool adds
    pixels to the near side: the render's own silhouette (``spill_weighted``), so that a pixel the
    render covers outside the mask costs what a mask pixel it misses costs.
    """
    err = (pred - target) ** 2
    if err.dim() == 4:
        err = err.mean(-1)
    near = silhouette_band(mask, band_px) if band_px > 0 else mask
    near = (near | also_near if also_near is not None else near).float()
    dims = tuple(range(1, err.dim()))
    inside = (err * near).sum(dims) / near.sum(dims).clamp_min(1.0)
    outside = (err * (1 - near)).sum(dims) / (1 - near).sum(dims).clamp_min(1.0)
    return (inside + outside).mean()


def spill_weighted(alpha: torch.Tensor, threshold: float) -> torch.Tensor:
    """The pixels (B,H,W) bool that a render of ``alpha`` (B,H,W) covers, above ``threshold``; no gradient.

    Given to ``balanced_mse`` as ``also_near``: the spec's balancing weighs each pixel outside the mask
    (outside area / inside area) times less than one inside, which for an object that is 5 % of the frame
    makes covering 15 background pixels cost what missing one mask pixel costs. While a deformation field
    cannot yet follow a fast limb, every frame then asks for its own mask to be covered and hardly objects
    to coverage elsewhere, so the object swells into the union of its poses. Counting the render's own
    silhouette with the mask makes spill and misses cost the same per pixel wherever they are, whatever
    the object's size; the background the render leaves alone stays balanced apart as the spec has it.
    """
    return alpha.detach() > threshold


def silhouette_band(mask: torch.Tensor, band_px: int) -> torch.Tensor:
    """``mask`` (B,H,W) bool grown by ``band_px`` pixels (square neighbourhood)."""
    k = 2 * int(band_px) + 1
    return torch.nn.functional.max_pool2d(mask.float()[:, None], k, stride=1, padding=int(band_px))[:, 0] > 0.5


def alpha_sharpness(alpha: torch.Tensor, mask: torch.Tensor, ring_px: int) -> torch.Tensor:
    """Mean of 4·α(1−α) over the pixels within ``ring_px`` of the silhouette of ``mask`` (B,H,W) bool.

    Zero where the rendered alpha (B,H,W) is 0 or 1, one where it is ½. A soft silhouette edge costs
    masked PSNR just inside the mask (the render is partly transparent there) and IoU just outside
    (it spills); this term asks the edge Gaussians to make the transition sharp instead. Only the
    ring around the silhouette counts, so the term's scale does not depend on the object's area. It
    does not know which side of the mask's edge a pixel is on: it pushes each edge pixel to whichever
    of 0 or 1 is nearer, so it also locks in a silhouette that has already spilled (docs/results.md).
    """
    ring = silhouette_band(mask, ring_px) & silhouette_band(~mask, ring_px)
    ring = ring.float()
    dims = tuple(range(1, alpha.dim()))
    per_image = (4 * alpha * (1 - alpha) * ring).sum(dims) / ring.sum(dims).clamp_min(1.0)
    return per_image.mean()


def instance_mse(instance: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each object's composited visibility (B,H,W,K) against its own visible mask (B,H,W,K).

    With modal masks this fixes which object is in front where they overlap in the image.
    """
    return ((instance - masks.float()) ** 2).sum(-1).mean()


def second_difference(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean squared second difference over the first (time) axis, in units of ``scale``."""
    if x.shape[0] < 3:
        return x.new_zeros(())
    d2 = (x[2:] - 2 * x[1:-1] + x[:-2]) / scale
    return (d2 ** 2).sum(-1).mean()


def oversize(log_scales: torch.Tensor, max_scale: float) -> torch.Tensor:
    """Penalty for Gaussians whose standard deviation exceeds ``max_scale``."""
    excess = torch.relu(log_scales - torch.log(torch.tensor(max_scale, device=log_scales.device)))
    return (excess ** 2).mean()
