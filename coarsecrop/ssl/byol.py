"""BYOL: an online network predicts a slow-moving target network's projection (paper Sec. 3.1, Eq. 2).

Grill et al. 2020: online = trunk + projector (4096 -> 256, BN) + predictor (4096 -> 256, BN);
target = EMA copy of trunk + projector; loss = ||q/|q| - z'/|z'|||^2 = 2 - 2 cos(q, z'),
symmetrised (each view predicts the other: L + L~, so the loss lies in [0, 8]).
Target momentum tau grows from 0.99 to 1 on a cosine schedule:
tau = 1 - (1 - tau_base) (cos(pi * progress) + 1) / 2 (BYOL Sec. 3.2; paper Sec. 4.1).

Optimiser: the paper (Sec. 4.1) uses batch 512 and "follows the base learning rate scheduler of
[49, 44]" = PixPro and SoCo. Both train their BYOL-style models with LARS (trust coefficient
0.001, biases and norm parameters excluded from adaptation and weight decay), base lr 1.0
scaled by batch / 256, weight decay 1e-5, cosine schedule (PixPro tools/pixpro_base_r50_400ep.sh,
SoCo tools/SoCo_FPN_400ep.sh, contrast/lars.py). Warm-up: PixPro 5 epochs, SoCo 10; we use 10 as
SoCo and BYOL itself. (BYOL's own ImageNet setting was lr 0.2 x batch / 256, wd 1.5e-6.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from coarsecrop.models.heads import byol_predictor, byol_projector
from coarsecrop.models.narrow import trunk_channels
from coarsecrop.ssl.common import check_common, check_views, ema_update, frozen_copy


class BYOL(nn.Module):
    """BYOL on any trunk returning [B, C, h, w] (global average pooled here)."""

    pipeline = "byol"

    def __init__(self, backbone: nn.Module, image_size: int = 224, dim: int = 256, hidden_dim: int = 4096,
                 predictor_hidden_dim: int = 4096, momentum: float = 0.99, random_resized_crop: bool = True,
                 local_views: int = 0):
        """
        backbone: the online trunk; exported as phi / the pretrained model.
        image_size: view size S of its views (coarsecrop.data.views.method_views).
        dim: projection (and prediction) dimension (256).
        hidden_dim: hidden width of the projector (4096).
        predictor_hidden_dim: hidden width of the predictor (4096).
        momentum: base target momentum tau_base (0.99); tau reaches 1 at the end of training.
        random_resized_crop: False = views resize the whole pseudo-image (Table 15).
        local_views: k SwAV-style small views (Table 11's s3); each predicts both global targets.
        """
        super().__init__()
        check_common(image_size, momentum, local_views)
        if min(dim, hidden_dim, predictor_hidden_dim) < 1:
            raise ValueError(f"dims must be positive, got {dim}, {hidden_dim}, {predictor_hidden_dim}")
        self.image_size, self.random_resized_crop, self.local_views = image_size, random_resized_crop, local_views
        self.base_momentum = momentum

        # online network: trunk -> projector -> predictor; target: EMA of trunk -> projector
        self.backbone = backbone
        self.projector = byol_projector(trunk_channels(backbone), hidden_dim, dim)
        self.predictor = byol_predictor(dim, predictor_hidden_dim)
        self.momentum_backbone = frozen_copy(self.backbone)
        self.momentum_projector = frozen_copy(self.projector)
        self.register_buffer("momentum", torch.tensor(float(momentum)))  # current tau, for logging / resume

    @property
    def optimizer_defaults(self) -> dict:
        """LARS as PixPro / SoCo (see module doc): lr 1.0 x batch / 256, wd 1e-5; the paper's batch is 512."""
        return dict(name="lars", lr=1.0, ref_batch=256, weight_decay=1e-5, momentum=0.9, paper_batch=512,
                    warmup_epochs=10, exclude_bias_and_norm=True, trust_coefficient=0.001)

    @torch.no_grad()
    def momentum_update(self, progress: float) -> None:
        """Target <- tau * target + (1 - tau) * online, tau = cosine_momentum(tau_base, progress)."""
        tau = cosine_momentum(self.base_momentum, progress)
        ema_update(self.momentum_backbone, self.backbone, tau)
        ema_update(self.momentum_projector, self.projector, tau)
        self.momentum.fill_(tau)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Online prediction q_theta: [B, 3, S, S] -> [B, dim]."""
        return self.predictor(self.projector(self.backbone(x).mean(dim=(2, 3))))

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Target projection z'_xi: [B, 3, S, S] -> [B, dim], no gradient."""
        return self.momentum_projector(self.momentum_backbone(x).mean(dim=(2, 3)))

    def forward(self, views: list[torch.Tensor]) -> dict:
        """views: [view 1, view 2, local views ...], each [B, 3, s, s]. Returns the loss and what to log."""
        check_views(views, 2)
        pairs = [(0, 1), (1, 0)] + [(local, g) for local in range(2, len(views)) for g in (0, 1)]
        predictions = [self.predict(v) for v in views]  # [B, dim] each
        targets = [self.target(v) for v in views[:2]]
        losses = torch.stack([regression_loss(predictions[i], targets[j]) for i, j in pairs])
        loss = 2 * losses.mean()  # = L + L~ of BYOL without local views
        with torch.no_grad():
            cos = 1 - losses[:2].mean() / 2
        return dict(loss=loss, cos=cos, momentum=self.momentum.detach().clone())


def regression_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Eq. (2) averaged over the batch: ||p/|p| - z/|z|||^2 = 2 - 2 <p, z> / (|p| |z|); z gets no gradient."""
    with torch.autocast(device_type=p.device.type, enabled=False):
        p = F.normalize(p.float(), dim=1)
        z = F.normalize(z.detach().float(), dim=1)
        return (2 - 2 * (p * z).sum(dim=1)).mean()


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's schedule: tau = 1 - (1 - base) (cos(pi p) + 1) / 2; base at p = 0, 1 at p = 1 (p clipped to [0, 1])."""
    progress = min(max(float(progress), 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
