"""Low-res mask logits -> logits at the image size, fast and only where they can matter.

The model upscales low-res logits (Hl, Wl) with bilinear resizes: to the model frame, crop to the
resized image, to the image size. A bilinear resize is linear and separable, so the chain is
``R @ L @ C.T`` with fixed matrices R (H, Hl) and C (W, Wl), built here by sending unit vectors
through the same resizes (and checked against ``predictor.upscale`` once, with a fallback).

Each output value is a convex combination of a few neighbouring low-res values, so a pixel can
exceed a level ``floor`` only near low-res values above it. :meth:`Upscaler.window` therefore
computes the exact logits only inside the window those values can reach, and everything outside
is known to be <= ``floor``: for the small objects of microscopy this is a few hundred pixels
instead of the whole image per mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_sam.predictor import Predictor

__all__ = ["Upscaler"]


def _axis(n: int, frame: int, valid: int, out: int) -> torch.Tensor:
    """(out, n): the 1D map low-res -> model frame -> first ``valid`` samples -> ``out`` samples."""
    basis = torch.eye(n)[:, None, :, None]  # n unit column images (n, 1, n, 1)
    x = F.interpolate(basis, (frame, 1), mode="bilinear", align_corners=False)
    x = F.interpolate(x[:, :, :valid], (out, 1), mode="bilinear", align_corners=False)
    return x[:, 0, :, 0].T.contiguous()


def _spans(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last nonzero column of each row (rows without any get (0, -1))."""
    nz = weights != 0
    idx = torch.arange(weights.shape[1])
    first = torch.where(nz, idx, weights.shape[1]).amin(dim=1)
    last = torch.where(nz, idx, -1).amax(dim=1)
    return first, last


class Upscaler:
    """Upscaling for one predictor (image size) and one low-res size (Hl, Wl).

    Attributes
    ----------
    exact : bool
        True when the matrices reproduce ``predictor.upscale``; otherwise every call uses it.
    """

    def __init__(self, predictor: Predictor, low_res: tuple[int, int]) -> None:
        self.predictor = predictor
        emb = predictor.embedding
        s = predictor.model.img_size
        self.rows = _axis(low_res[0], s, emb.input_size[0], emb.original_size[0])
        self.cols = _axis(low_res[1], s, emb.input_size[1], emb.original_size[1])
        probe = torch.randn(1, *low_res, generator=torch.Generator().manual_seed(0)) * 8
        reference = predictor.upscale(probe[:, None].to(predictor.model.device))[:, 0].cpu()
        self.exact = bool(torch.allclose(self.rows @ probe[0] @ self.cols.T, reference[0], atol=1e-3))
        # which low-res rows feed each output row, and which output rows each low-res row feeds
        self._row_in = _spans(self.rows)
        self._row_out = _spans(self.rows.T)
        self._col_in = _spans(self.cols)
        self._col_out = _spans(self.cols.T)
        self._row_feeds = self._row_out[1] >= 0
        self._col_feeds = self._col_out[1] >= 0

    def full(self, low: torch.Tensor) -> torch.Tensor:
        """(n, Hl, Wl) -> (n, H, W) logits."""
        low = low.float().cpu()
        if self.exact:
            return self.rows @ low @ self.cols.T
        return self.predictor.upscale(low[:, None].to(self.predictor.model.device))[:, 0].cpu()

    def window(self, low: torch.Tensor, floor: float) -> tuple[int, int, torch.Tensor] | None:
        """The logits of one mask where they may exceed ``floor``.

        Parameters
        ----------
        low : (Hl, Wl) low-res logits
        floor : float

        Returns
        -------
        (row0, col0, logits) with logits (h, w) for rows row0.. and cols col0.. of the image;
        every pixel outside has a value <= ``floor``. None when no pixel exceeds it.
        """
        low = low.float().cpu()
        if not self.exact:
            full = self.full(low[None])[0]
            hit = full > floor
            if not hit.any():
                return None
            r = torch.nonzero(hit.any(dim=1)).flatten()
            c = torch.nonzero(hit.any(dim=0)).flatten()
            r0, r1, c0, c1 = int(r[0]), int(r[-1]) + 1, int(c[0]), int(c[-1]) + 1
            return r0, c0, full[r0:r1, c0:c1]
        above = low > floor
        # low-res rows/cols in the padding of the model frame feed no output pixel
        act_r = torch.nonzero(above.any(dim=1) & self._row_feeds).flatten()
        act_c = torch.nonzero(above.any(dim=0) & self._col_feeds).flatten()
        if act_r.numel() == 0 or act_c.numel() == 0:
            return None
        y0, y1 = int(self._row_out[0][act_r[0]]), int(self._row_out[1][act_r[-1]]) + 1
        x0, x1 = int(self._col_out[0][act_c[0]]), int(self._col_out[1][act_c[-1]]) + 1
        if y1 <= y0 or x1 <= x0:
            return None
        k0, k1 = int(self._row_in[0][y0]), int(self._row_in[1][y1 - 1]) + 1
        j0, j1 = int(self._col_in[0][x0]), int(self._col_in[1][x1 - 1]) + 1
        win = self.rows[y0:y1, k0:k1] @ low[k0:k1, j0:j1] @ self.cols[x0:x1, j0:j1].T
        return y0, x0, win
