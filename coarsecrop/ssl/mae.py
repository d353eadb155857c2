"""MAE: mask 75% of the patches, encode the rest with a ViT, reconstruct the masked pixels.

Follows facebookresearch/mae models_mae.py (stage names patchify / random_masking /
forward_encoder / forward_decoder / forward_loss) and its pre-training recipe, which the paper
"strictly follows" (Sec. 4.1): ViT-B/16 encoder, decoder of 8 blocks, width 512, 16 heads, fixed
2-D sin-cos position embeddings, mask ratio 0.75, loss on normalised pixels of each target
patch (--norm_pix_loss), AdamW (betas 0.9 / 0.95, wd 0.05) with lr 1.5e-4 x batch / 256,
40 warm-up epochs, cosine; batch 4096.

The encoder is a timm VisionTransformer (coarsecrop/models/vit.py) whose state_dict loads into
timm / ViTDet; this module calls its parts (patch_embed, pos_embed, cls_token, blocks, norm),
replaces its learnable position embedding by MAE's fixed one and re-initialises it as MAE does.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from coarsecrop.models.vit import sincos_pos_embed
from coarsecrop.ssl.common import check_common, check_views


class MAE(nn.Module):
    """Masked autoencoder on a timm VisionTransformer encoder."""

    pipeline = "mae"

    def __init__(self, backbone: nn.Module, image_size: int = 224, mask_ratio: float = 0.75,
                 norm_pix_loss: bool = True, decoder_dim: int = 512, decoder_depth: int = 8,
                 decoder_heads: int = 16, random_resized_crop: bool = True):
        """
        backbone: a timm VisionTransformer (class token, square patches) built for ``image_size``.
        image_size: view size S (a multiple of the patch size).
        mask_ratio: share of patches removed (0.75).
        norm_pix_loss: True = targets are pixels normalised per patch (mean 0, var 1), as MAE's recipe.
        decoder_dim, decoder_depth, decoder_heads: the light decoder (512, 8, 16).
        random_resized_crop: False = the view resizes the whole pseudo-image (Table 15).
        """
        super().__init__()
        check_common(image_size, 0.0)
        for part in ("patch_embed", "pos_embed", "cls_token", "blocks", "norm"):
            if getattr(backbone, part, None) is None:
                raise ValueError(f"MAE needs a timm VisionTransformer with a class token (missing .{part}); "
                                 "build it with coarsecrop.models.vit.build_vit")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if decoder_dim % decoder_heads or decoder_dim % 4:
            raise ValueError(f"decoder_dim {decoder_dim} must be divisible by decoder_heads {decoder_heads} and by 4")
        grid = backbone.patch_embed.grid_size
        if tuple(backbone.patch_embed.img_size) != (image_size, image_size) or grid[0] != grid[1]:
            raise ValueError(f"the ViT was built for {tuple(backbone.patch_embed.img_size)} inputs, not "
                             f"{image_size}; build it with build_vit(name, image_size)")
        from timm.models.vision_transformer import Block

        self.image_size, self.random_resized_crop, self.local_views = image_size, random_resized_crop, 0
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        self.patch_size = backbone.patch_embed.patch_size[0]
        self.grid_size = grid[0]
        num_patches = backbone.patch_embed.num_patches
        embed_dim = backbone.pos_embed.shape[-1]
        norm_layer = partial(nn.LayerNorm, eps=1e-6)

        # encoder: the ViT, with MAE's fixed sin-cos position embedding
        self.backbone = backbone
        self.backbone.pos_embed.requires_grad_(False)

        # decoder: embed, mask token, fixed position embedding, blocks, norm, pixel prediction
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size ** 2 * 3, bias=True)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """MAE's init: sin-cos position embeddings, xavier patch projection and linears, N(0, .02) tokens."""
        self.backbone.pos_embed.data.copy_(sincos_pos_embed(self.backbone.pos_embed.shape[-1], self.grid_size)[None])
        self.decoder_pos_embed.data.copy_(sincos_pos_embed(self.decoder_pos_embed.shape[-1], self.grid_size)[None])
        w = self.backbone.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.backbone.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)

    @property
    def optimizer_defaults(self) -> dict:
        """MAE's pre-training recipe: AdamW, lr 1.5e-4 x batch / 256, wd 0.05, betas (0.9, 0.95), 40 warm-up epochs."""
        return dict(name="adamw", lr=1.5e-4, ref_batch=256, weight_decay=0.05, betas=(0.9, 0.95),
                    paper_batch=4096, warmup_epochs=40, exclude_bias_and_norm=True)

    def momentum_update(self, progress: float = 0.0) -> None:
        """MAE has no momentum encoder."""

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> [N, L, p*p*3], patches row-major, pixels (row, column, channel) inside a patch."""
        p = self.patch_size
        n, c, h, w = imgs.shape
        if h != w or h % p:
            raise ValueError(f"MAE views must be square multiples of the patch size {p}, got {h} x {w}")
        x = imgs.reshape(n, c, h // p, p, w // p, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(n, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[N, L, p*p*3] -> [N, 3, H, W], the inverse of patchify."""
        p = self.patch_size
        g = int(round(x.shape[1] ** 0.5))
        if g * g != x.shape[1]:
            raise ValueError(f"{x.shape[1]} patches do not form a square grid")
        x = x.reshape(x.shape[0], g, g, p, p, 3)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], 3, g * p, g * p)

    def random_masking(self, x: torch.Tensor, mask_ratio: float):
        """Per-sample random masking by argsort of uniform noise.

        x: [N, L, D]. Returns (kept tokens [N, L_keep, D], mask [N, L] with 0 keep / 1 removed,
        ids_restore [N, L]); L_keep = int(L * (1 - mask_ratio))."""
        n, length, d = x.shape
        len_keep = int(length * (1 - mask_ratio))
        noise = torch.rand(n, length, device=x.device)  # small is kept, large is removed
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).expand(-1, -1, d))
        mask = torch.ones(n, length, device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)  # back to patch order
        return x_masked, mask, ids_restore

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float):
        """[N, 3, H, W] -> (latent [N, 1 + L_keep, D] with the class token first, mask, ids_restore)."""
        vit = self.backbone
        x = vit.patch_embed(imgs)  # [N, L, D]
        x = x + vit.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio)
        cls_token = vit.cls_token + vit.pos_embed[:, :1, :]
        x = torch.cat([cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # [N, 1 + L_keep, D]
        x = vit.blocks(x)
        return vit.norm(x), mask, ids_restore

    def forward_decoder(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Latent [N, 1 + L_keep, D] -> predicted pixels [N, L, p*p*3] for every patch (class token dropped)."""
        x = self.decoder_embed(x)  # [N, 1 + L_keep, Dd]
        n, length = x.shape[0], ids_restore.shape[1]
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # [N, L, Dd], kept then masked
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))  # unshuffle
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed  # [N, 1 + L, Dd]
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_pred(self.decoder_norm(x))  # [N, 1 + L, p*p*3]
        return x[:, 1:, :]

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error on the removed patches; targets normalised per patch if norm_pix_loss.

        imgs [N, 3, H, W]; pred [N, L, p*p*3]; mask [N, L] (1 = removed). Computed in float32."""
        with torch.autocast(device_type=imgs.device.type, enabled=False):
            target = self.patchify(imgs.float())
            if self.norm_pix_loss:
                mean = target.mean(dim=-1, keepdim=True)
                var = target.var(dim=-1, keepdim=True)
                target = (target - mean) / (var + 1.0e-6) ** 0.5
            loss = ((pred.float() - target) ** 2).mean(dim=-1)  # [N, L], per patch
            return (loss * mask).sum() / mask.sum()

    def forward(self, views: list[torch.Tensor]) -> dict:
        """views: [images [N, 3, S, S]] (one view). Returns the loss."""
        check_views(views, 1, 1)
        imgs = views[0]
        if imgs.shape[-1] != self.image_size or imgs.shape[-2] != self.image_size:
            raise ValueError(f"MAE was built for {self.image_size}-px views, got {list(imgs.shape)}")
        latent, mask, ids_restore = self.forward_encoder(imgs, self.mask_ratio)
        pred = self.forward_decoder(latent, ids_restore)  # [N, L, p*p*3]
        return dict(loss=self.forward_loss(imgs, pred, mask))
