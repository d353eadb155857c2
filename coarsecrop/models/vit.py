"""ViT encoders (timm's VisionTransformer) for MAE: ViT-B/16 at paper scale, tiny ViTs for CPU.

The encoder is a plain ``timm.models.vision_transformer.VisionTransformer`` (class token,
LayerNorm eps 1e-6, no classifier), so its state_dict loads into timm's ``vit_base_patch16_224``
and into ViTDet-style detectors unchanged. MAE's masking is done by the method
(coarsecrop/ssl/mae.py), which calls the encoder's parts (patch_embed, pos_embed, blocks, norm).

Names: the standard ones (vit_base_patch16 as in the paper, Sec. 4.1; vit_large_patch16,
vit_huge_patch14, vit_small_patch16, vit_tiny_patch16) and CPU sizes: vit_micro_patch8 (dim 96,
depth 4, 3 heads), vit_mini_patch8 (dim 192, depth 4, 3 heads), vit_micro_patch4 (dim 96,
depth 4, 3 heads; an 8 x 8 grid on 32-px views).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

VITS = {
    "vit_base_patch16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
    "vit_huge_patch14": dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16),
    "vit_small_patch16": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "vit_tiny_patch16": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    "vit_mini_patch8": dict(patch_size=8, embed_dim=192, depth=4, num_heads=3),
    "vit_micro_patch8": dict(patch_size=8, embed_dim=96, depth=4, num_heads=3),
    "vit_micro_patch4": dict(patch_size=4, embed_dim=96, depth=4, num_heads=3),
}


def is_vit_name(name: str) -> bool:
    return name in VITS


def build_vit(name: str = "vit_base_patch16", image_size: int = 224) -> nn.Module:
    """A timm VisionTransformer encoder (no classifier head) for square ``image_size`` inputs."""
    if name not in VITS:
        raise ValueError(f"unknown ViT {name!r}; valid: {', '.join(VITS)}")
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError as err:
        raise ImportError("ViT backbones need timm (pip install 'timm>=1.0,<2'); "
                          "it is a dependency of coarsecrop, reinstall the package") from err
    config = VITS[name]
    if image_size % config["patch_size"]:
        raise ValueError(f"{name}: image size {image_size} is not a multiple of the patch size "
                         f"{config['patch_size']}; choose a view size divisible by it")
    vit = VisionTransformer(img_size=image_size, num_classes=0, global_pool="token", mlp_ratio=4.0,
                            qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), **config)
    vit.arch = name
    return vit


def sincos_pos_embed(dim: int, grid_size: int, cls_token: bool = True) -> torch.Tensor:
    """MAE's fixed 2-D sine-cosine position embedding: [grid*grid (+1), dim], row-major patches.

    As MAE's util/pos_embed.py get_2d_sincos_pos_embed: the first half of the channels encodes
    the column index (its grid[0]), the second half the row index; a zero row for the class token."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    grid_w, grid_h = torch.meshgrid(coords, coords, indexing="xy")  # [g, g]: w varies along columns
    emb = torch.cat([sincos_1d(dim // 2, grid_w.reshape(-1)), sincos_1d(dim // 2, grid_h.reshape(-1))], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[M] positions -> [M, dim]: sin then cos of positions * 10000^(-2i/dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions[:, None] * omega[None]  # [M, dim/2]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
