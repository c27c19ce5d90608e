"""The assembled Segment Anything model: image encoder, prompt encoder and mask decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from napari_sam.model.mask_decoder import MaskDecoder
from napari_sam.model.prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """SAM assembled from parts passed in.

    The model works in the padded, square model-input frame of side ``img_size``: pixels
    (B, 3, S, S) in 0..255, prompt coordinates (x, y) in that frame. Preprocessing, resizing
    and napari's (row, col) convention live in :class:`napari_sam.predictor.Predictor`.
    """

    mask_threshold: float = 0.0

    def __init__(
        self,
        *,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
        pixel_std: tuple[float, float, float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        # Filled in by napari_sam.weights.load_model; defaults describe a freshly built model.
        self.name = "unnamed"
        self.weights_hash = ""
        self.precision = "fp32"

    @property
    def img_size(self) -> int:
        """Side S of the square model input."""
        return int(self.image_encoder.img_size)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device  # type: ignore[no-any-return]

    @property
    def embedding_shape(self) -> tuple[int, int, int]:
        """(C, He, We) of one image embedding."""
        he, we = self.prompt_encoder.image_embedding_size
        return (self.prompt_encoder.embed_dim, he, we)

    def normalize_and_pad(self, x: Tensor) -> Tensor:
        """(B, 3, h, w) pixels in 0..255 with h, w <= S -> (B, 3, S, S) normalised and zero-padded
        at the bottom and right."""
        x = (x - self.pixel_mean) / self.pixel_std
        pad_h = self.img_size - x.shape[-2]
        pad_w = self.img_size - x.shape[-1]
        return F.pad(x, (0, pad_w, 0, pad_h))

    def encode(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) normalised, padded pixels -> (B, C, He, We) embeddings."""
        return self.image_encoder(x)  # type: ignore[no-any-return]

    def decode(
        self,
        embedding: Tensor,
        points: tuple[Tensor, Tensor] | None = None,
        boxes: Tensor | None = None,
        masks: Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Prompt-to-mask decoding on one cached embedding.

        Parameters
        ----------
        embedding : (1 or B, C, He, We)
        points : coords (B, N, 2) as (x, y) in the model frame and labels (B, N), or None
        boxes : (B, 4) as (x0, y0, x1, y1) in the model frame, or None
        masks : (B, 1, 4He, 4We) logits, or None
        multimask_output : bool

        Returns
        -------
        low_res_logits : (B, K, 4He, 4We), K = 3 with multimask_output else 1
        iou_predictions : (B, K)
        """
        sparse, dense = self.prompt_encoder(points, boxes, masks)
        return self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )

    def upscale_logits(
        self, low_res: Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> Tensor:
        """Low-res logits (B, K, 4He, 4We) -> (B, K, H, W) logits at the original image size.

        ``input_size`` (h, w) is the resized image inside the padded S x S frame.
        """
        x = F.interpolate(low_res, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        x = x[..., : input_size[0], : input_size[1]]
        return F.interpolate(x, original_size, mode="bilinear", align_corners=False)
