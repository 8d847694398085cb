"""A weight-free prior for the side of an object its one reference view never shows.

Without a novel-view model (``--disable_guidance``, or no Zero123 weights), stage 1 sees each object from
one camera only. Its photometric and silhouette terms are met by a single layer of Gaussians on the
visible surface, so from the side the object is a flat card. ``mirror_back`` gives it a body:

1. **Thickness from the silhouette (inflation).** Each pixel of the reference silhouette gets a
   half-thickness from its distance ``d`` to the silhouette's edge and the radius ``r`` of the part it
   lies in, ``sqrt(2·r·d − d²)``: the half-chord of a round cross-section of radius ``r``. A disc becomes a
   ball, a limb a tube of its own width. ``r`` is the largest distance-to-edge within ``2·d`` of the
   pixel (a grey dilation), which finds the middle of a thin part without reaching into a wider one.
2. **A back mirrored from the front.** The middle surface lies that half-thickness behind the rendered
   front surface. Every Gaussian in front of it is copied to its mirror image behind it, along its own
   camera ray (so the copy projects onto the same pixel, hidden behind the front), with its covariance
   reflected the same way. The back then has the front's colours and the silhouette's thickness, which
   is what a symmetric object shows; the reference view does not change.

All of it is geometry of the object's own reference render: no constant depends on the clip, and the
prior needs no weights. It is applied after stage 1's final prune (``Stage1Config.back_prior``).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..kernels import rasterize
from .gaussians import CanonicalGaussians
from .geometry import quat_to_rotmat, rotmat_to_quat
from .object_camera import ReferenceCamera

SILHOUETTE_ALPHA = 0.5  # a pixel of the reference render belongs to the silhouette above this alpha


def inflation_half_thickness(silhouette: np.ndarray) -> np.ndarray:
    """Half-thickness in pixels (H,W) float of a round-bodied object with this (H,W) bool silhouette.

    ``sqrt(2·r·d − d²)`` with ``d`` the distance to the nearest pixel outside and ``r`` the largest such
    distance within ``2·d``: exact at the middle of any part (``d = r`` gives ``r``) and for a disc's
    inner half, a little thin towards a wide part's edge. Zero outside the silhouette.
    """
    sil = silhouette.astype(np.uint8)
    if not sil.any():
        return np.zeros(silhouette.shape, np.float32)
    padded = np.pad(sil, 1)  # the frame's edge counts as outside
    d = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    r = d.copy()
    top = float(d.max())
    window = 1.0
    while window <= 2 * top + 1:
        k = 2 * int(np.ceil(window)) + 1
        grown = cv2.dilate(d, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        sel = 2 * d >= window  # pixels whose window (2·d) is at least this one
        r[sel] = np.maximum(r[sel], grown[sel])
        window *= 1.5
    return np.sqrt(np.clip(2 * r * d - d * d, 0.0, None)).astype(np.float32)


@torch.no_grad()
def mirror_back(canonical: CanonicalGaussians, ref: ReferenceCamera) -> CanonicalGaussians:
    """``canonical`` with a back: its Gaussians in front of the inflated middle surface, mirrored behind it.

    Returns the canonical unchanged when its reference render covers no pixel (nothing to inflate).
    The originals keep their parameters exactly; the copies follow them.
    """
    c = canonical
    dev = c.means.device
    S = ref.size
    view, K = ref.viewmat.to(dev), ref.K.to(dev)
    depth, alpha, _ = rasterize(c.means, c.quats, c.log_scales.exp(), c.opacities, c.colors, view[None], K[None],
                                S, S, render_mode="ED")
    alpha = alpha[0].reshape(S, S)
    front = depth[0].reshape(S, S)
    sil = alpha > SILHOUETTE_ALPHA
    if not bool(sil.any()):
        return canonical
    half_px = torch.from_numpy(inflation_half_thickness(sil.cpu().numpy())).to(dev)
    R, t = view[:3, :3], view[:3, 3]
    cam = c.means @ R.T + t
    z = cam[:, 2]
    u = (K[0, 0] * cam[:, 0] / z.clamp_min(1e-6) + K[0, 2]).floor().long()
    v = (K[1, 1] * cam[:, 1] / z.clamp_min(1e-6) + K[1, 2]).floor().long()
    on = (z > 0) & (u >= 0) & (u < S) & (v >= 0) & (v < S)
    uu, vv = u.clamp(0, S - 1), v.clamp(0, S - 1)
    on &= sil[vv, uu]
    z_front, half = front[vv, uu], half_px[vv, uu]
    middle = z_front + half * z_front / K[0, 0]  # pixels → depth units at the front surface
    pick = on & (z < middle) & (half > 0)
    if not bool(pick.any()):
        return canonical
    z_back = 2 * middle[pick] - z[pick]
    cam_back = cam[pick] * (z_back / z[pick])[:, None]  # along the same ray
    means_back = (cam_back - t) @ R
    # the reflection z → −z in camera space, expressed in object space; a reflected rotation is made proper
    # again by flipping its third axis, which a diagonal scale matrix does not see
    M = torch.diag(torch.tensor([1.0, 1.0, -1.0], device=dev))
    N = R.T @ M @ R
    rot = quat_to_rotmat(c.quats[pick])
    rot_back = N @ rot @ M
    quats_back = rotmat_to_quat(rot_back)
    out = CanonicalGaussians(means=torch.cat([c.means, means_back]), log_scales=torch.cat([c.log_scales, c.log_scales[pick]]),
                             colors=torch.cat([c.colors, c.colors[pick]]),
                             opacities=torch.cat([c.opacities, c.opacities[pick]]),
                             quats=torch.cat([c.quats, quats_back]))
    # the constructor's colour and opacity round trip (clamp, logit) is not exact: keep the originals' own logits
    out.color_logits.data.copy_(torch.cat([c.color_logits, c.color_logits[pick]]))
    out.opacity_logits.data.copy_(torch.cat([c.opacity_logits, c.opacity_logits[pick]]))
    return out
