"""Per-object deformation field of the GenMOJO method: how an object's canonical Gaussians change
over the clip.

For each Gaussian centre and frame, multi-scale space-time plane features (``HexPlane``) feed a
small trunk with four heads: softmax coefficients over a few motion bases, and changes of
log-scale, quaternion and colour logit. The motion bases are object-global 3D displacements per
frame produced by a tiny MLP of time, so a Gaussian's displacement is a convex combination of them;
sharing the bases across the object keeps its motion coherent and low-dimensional. With
``DeformationConfig.motion_bases = "se3"`` each basis is a rigid motion per frame instead (rotation about
the object's origin, then translation), blended per Gaussian by the same coefficients as in linear blend
skinning: a limb that swings about a joint then follows one basis.

The field starts as the exact identity (every delta 0 at every frame): the canonical Gaussians were
fitted in stage 1 and are already right for the reference frame, and an identity start means stage
2 begins from that solution instead of a random jitter that the losses first have to undo. The
bases start at zero while the basis coefficients start random, so that the bases can still grow
apart (see ``DeformationField.reset_parameters``). The public code leaves the basis MLP and colour
head randomly initialised (a small time-dependent offset and colour change at start);
``DeformationConfig.parity_random_init`` reproduces that for parity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import DeformationConfig
from .hexplane import HexPlane


@dataclass
class DeformationDelta:
    """Per-frame changes for N Gaussians at B frames."""

    d_means: Tensor  # (B, N, 3) displacement in object units
    d_log_scales: Tensor  # (B, N, 3)
    d_quats: Tensor  # (B, N, 4) added to the raw wxyz quaternion
    d_colors: Tensor  # (B, N, 3) added to colour logits


# values per motion basis and frame, by DeformationConfig.motion_bases
BASIS_WIDTH = {"translation": 3, "se3": 6}


def axis_angle_to_matrix(v: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) of axis-angle vectors (..., 3) (Rodrigues), smooth through zero."""
    theta2 = (v * v).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    small = theta2 < 1e-8
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))  # no NaN gradient at zero
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta * theta))
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).view(*v.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def time_resolution(cfg: DeformationConfig, num_frames: int) -> int:
    """Height of the space-time planes for a clip of ``num_frames`` frames."""
    return max(int(cfg.min_time_resolution), int(cfg.time_resolution_factor * num_frames))


def basis_hinges(cfg: DeformationConfig, num_frames: int) -> int:
    """Width of the motion bases' time layer: one ReLU hinge per unit. ``basis_hinge_frames`` > 0 caps it at
    one hinge per that many frames (at least ``min_basis_hinges``), so a short clip's bases cannot bend
    between two neighbouring frames; 0 keeps ``basis_hidden`` whatever the clip's length."""
    if cfg.basis_hinge_frames <= 0:
        return int(cfg.basis_hidden)
    by_length = int(round(num_frames / cfg.basis_hinge_frames))
    return max(1, min(int(cfg.basis_hidden), max(int(cfg.min_basis_hinges), by_length)))


class _Head(nn.Module):
    """ReLU, one residual hidden layer, then the output layer."""

    def __init__(self, hidden: int, out: int):
        super().__init__()
        self.mid = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, out)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(x)
        x = x + self.mid(x)
        return self.out(x)


def _zero(layer: nn.Linear) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


@torch.no_grad()
def _spread_hinges(layer: nn.Linear) -> None:
    """Biases of the time layer (1 → H) that put unit i's ReLU hinge at the i-th of H times evenly inside
    (−1, 1), keeping its (random-signed) slope: the bases can then bend anywhere in the clip."""
    hinges = torch.linspace(-1.0, 1.0, layer.out_features + 2, dtype=layer.weight.dtype)[1:-1]
    layer.bias.copy_(-layer.weight[:, 0] * hinges.to(layer.weight.device))


class DeformationField(nn.Module):
    """Maps canonical object-space centres (N, 3) and frame indices (B,) to a ``DeformationDelta``.

    ``kernel`` picks the plane-feature kernel (``backend.kernels.hexplane_features``: auto, torch, triton)."""

    def __init__(self, cfg: DeformationConfig, num_frames: int, kernel: str = "auto"):
        super().__init__()
        if int(num_frames) < 1:
            raise ValueError(f"a deformation field needs at least one frame, got num_frames={num_frames}")
        self.cfg = cfg
        self.num_frames = int(num_frames)
        self.bounds = float(cfg.bounds)
        self.num_bases = int(cfg.num_bases)
        self.planes = HexPlane(cfg.grid_resolutions, cfg.grid_channels,
                               time_resolution(cfg, self.num_frames), cfg.spatial_init, kernel=kernel)
        self.trunk = nn.Linear(self.planes.out_dim, cfg.hidden)
        self.coeff_head = _Head(cfg.hidden, cfg.num_bases)
        self.scale_head = _Head(cfg.hidden, 3)
        self.rotation_head = _Head(cfg.hidden, 4)
        self.color_head = _Head(cfg.hidden, 3)
        if cfg.motion_bases not in BASIS_WIDTH:
            raise ValueError(f"deformation.motion_bases must be one of {', '.join(BASIS_WIDTH)}, "
                             f"got {cfg.motion_bases!r}")
        self.basis_width = BASIS_WIDTH[cfg.motion_bases]
        hinges = basis_hinges(cfg, self.num_frames)
        self.basis_mlp = nn.Sequential(
            nn.Linear(1, hinges), nn.ReLU(), nn.Linear(hinges, self.basis_width * cfg.num_bases)
        )
        self.reset_parameters()

    @property
    def time_resolution(self) -> int:
        return self.planes.time_resolution

    def reset_parameters(self) -> None:
        """Xavier MLPs with zero biases (the bases' time layer: hinges spread over the clip, see
        ``DeformationConfig.basis_knots``); output layers zeroed so that the field starts at the identity.

        Default: the basis MLP, scale, rotation and colour outputs are zeroed; the coefficient head
        keeps its random init. With all bases zero the coefficients cannot move anything, so the start
        is still exactly the identity, and their non-uniform values are what make the bases receive
        different gradients. Zeroing both (uniform coefficients and identical zero bases) would keep
        every basis identical forever and the object could only translate as a whole.

        ``parity_random_init``: the public code's init — coefficient, scale and rotation outputs zeroed,
        basis MLP and colour head random (a small time-dependent offset and colour change at start).
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        if self.cfg.basis_knots == "spread":
            _spread_hinges(self.basis_mlp[0])
        elif self.cfg.basis_knots != "centre":
            raise ValueError(f"deformation.basis_knots must be 'spread' or 'centre', got {self.cfg.basis_knots!r}")
        _zero(self.scale_head.out)
        _zero(self.rotation_head.out)
        if self.cfg.parity_random_init:
            _zero(self.coeff_head.out)
        else:
            _zero(self.basis_mlp[-1])
            _zero(self.color_head.out)

    def _check_frames(self, frames: Tensor) -> Tensor:
        frames = torch.as_tensor(frames)
        if frames.ndim != 1:
            raise ValueError(f"frames must be a 1-D tensor of frame indices, got shape {tuple(frames.shape)}")
        if frames.dtype.is_floating_point or frames.dtype.is_complex or frames.dtype == torch.bool:
            raise ValueError(f"frames must be integer frame indices, got dtype {frames.dtype}")
        if frames.numel() and (int(frames.min()) < 0 or int(frames.max()) >= self.num_frames):
            raise ValueError(
                f"frame indices must lie in [0, {self.num_frames - 1}] for this {self.num_frames}-frame "
                f"deformation field, got min {int(frames.min())} and max {int(frames.max())}"
            )
        return frames

    def times(self, frames: Tensor) -> Tensor:
        """Normalised time tau = 2·t/T − 1 per frame index (B,) → (B,) on the field's device."""
        frames = self._check_frames(frames)
        p = self.trunk.weight
        return frames.to(device=p.device, dtype=p.dtype) * (2.0 / self.num_frames) - 1.0

    def bases(self, frames: Tensor) -> Tensor:
        """The motion bases per frame: (B, num_bases, 3) displacements ("translation"), or (B, num_bases, 6)
        axis-angle rotations and translations ("se3")."""
        tau = self.times(frames)
        return self.basis_mlp(tau[:, None]).view(tau.shape[0], self.num_bases, self.basis_width)

    def _displacements(self, means: Tensor, coeffs: Tensor, bases: Tensor) -> Tensor:
        """Each Gaussian's displacement (B, N, 3): its coefficients (B, N, K) blend the bases (B, K, W)."""
        if self.basis_width == 3:
            return torch.bmm(coeffs, bases)
        eye = torch.eye(3, dtype=bases.dtype, device=bases.device)
        turn = axis_angle_to_matrix(bases[..., :3]) - eye  # (B, K, 3, 3): exactly zero at the identity start
        linear = torch.einsum("bnk,bkij->bnij", coeffs, turn)  # the blended rotation's change per Gaussian
        return torch.einsum("bnij,nj->bni", linear, means) + torch.bmm(coeffs, bases[..., 3:])

    def _evaluate(self, means: Tensor, frames: Tensor) -> tuple[DeformationDelta, Tensor]:
        if means.ndim != 2 or means.shape[-1] != 3:
            raise ValueError(f"means must have shape (N, 3), got {tuple(means.shape)}")
        tau = self.times(frames)
        B = tau.shape[0]
        h = self.trunk(self.planes(means / self.bounds, tau))  # (B, N, hidden)
        coeffs = torch.softmax(self.coeff_head(h), dim=-1)  # (B, N, K)
        bases = self.basis_mlp(tau[:, None]).view(B, self.num_bases, self.basis_width)
        delta = DeformationDelta(
            d_means=self._displacements(means, coeffs, bases),
            d_log_scales=self.scale_head(h),
            d_quats=self.rotation_head(h),
            d_colors=self.color_head(h),
        )
        return delta, coeffs

    def coefficients(self, means: Tensor, frames: Tensor) -> Tensor:
        """Softmax weights of the motion bases per Gaussian and frame (B, N, num_bases)."""
        return self._evaluate(means, frames)[1]

    def forward(self, means: Tensor, frames: Tensor) -> DeformationDelta:
        """means (N,3) canonical object-space centres; frames (B,) integer frame indices (long) → deltas."""
        return self._evaluate(means, frames)[0]

    def grid_parameters(self) -> list[nn.Parameter]:
        return list(self.planes.parameters())

    def mlp_parameters(self) -> list[nn.Parameter]:
        grid = {id(p) for p in self.grid_parameters()}
        return [p for p in self.parameters() if id(p) not in grid]

    def param_groups(
        self, lr_mlp: float, lr_grid: float, weight_decay_mlp: float, weight_decay_grid: float
    ) -> list[dict]:
        """Optimiser parameter groups: the MLPs and the feature planes, each parameter exactly once."""
        return [
            {"params": self.mlp_parameters(), "lr": lr_mlp, "weight_decay": weight_decay_mlp,
             "name": "deformation_mlp"},
            {"params": self.grid_parameters(), "lr": lr_grid, "weight_decay": weight_decay_grid,
             "name": "deformation_grid"},
        ]
