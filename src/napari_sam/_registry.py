"""The registry of known SAM weights: names, architectures, URLs, hashes, sizes.

Registry sources (checked while writing this module, not by downloading):

- vit_b / vit_l / vit_h: Meta's segment-anything release; URLs, sha256 and sizes as
  published, the same sha256 as micro-sam's registry lists.
- vit_t: MobileSAM's ``weights/mobile_sam.pt`` on GitHub; sha256 and size as published.
- micro-sam fine-tuned models: URLs and xxh128 hashes from micro-sam's pooch registry
  (``micro_sam/v1/util.py``, current at the time of writing). vit_b_lm, vit_l_lm and
  vit_b_em_organelles are listed with the same URL and hash by a second, independent project;
  vit_t_lm, vit_l_em_organelles and vit_t_em_organelles by micro-sam alone. Their file sizes
  are not published (``size_bytes`` is ``None``). Checking xxh128 needs ``pip install xxhash``.
"""

from __future__ import annotations

from dataclasses import dataclass

from napari_sam._download import split_hash

__all__ = ["DEFAULT_MODEL", "EVERYTHING_DEFAULTS", "REGISTRY", "SHIPPED", "ModelInfo"]

DEFAULT_MODEL = "tiny-synth"


@dataclass(frozen=True)
class ModelInfo:
    """One entry of the model registry.

    Attributes
    ----------
    name
        Registry name, e.g. ``"vit_b"``.
    arch
        Architecture: ``"vit_b"``, ``"vit_l"``, ``"vit_h"``, ``"vit_t"`` (TinyViT) or ``"custom"``.
    size_bytes
        File size, ``None`` where not published (or the shipped file is missing).
    url
        Download URL, ``None`` for weights shipped inside the package.
    known_hash
        ``"sha256:<hex>"`` or ``"xxh128:<hex>"`` (pooch's notation), ``None`` if unknown.
    is_cached
        Whether the file is on disk (in the cache, or shipped), as of the call that made this.
    description
        One line for users.
    filename
        File name in ``<cache>/weights/`` (or in the package for shipped weights).
    """

    name: str
    arch: str
    size_bytes: int | None
    url: str | None
    known_hash: str | None
    is_cached: bool = False
    description: str = ""
    filename: str = ""

    @property
    def sha256(self) -> str | None:
        """The sha256 hex digest where the registry has one."""
        if self.known_hash is None:
            return None
        algorithm, digest = split_hash(self.known_hash)
        return digest if algorithm == "sha256" else None


_META = "https://dl.fbaipublicfiles.com/segment_anything/"
_BIOIMAGEIO = "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io/"
_MICRO_SAM = "micro-sam fine-tuned {what} (Archit et al. 2025, Nature Methods), {arch} backbone"

REGISTRY: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        ModelInfo(
            "vit_b", "vit_b", 375_042_383, _META + "sam_vit_b_01ec64.pth",
            "sha256:ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            description="SAM ViT-B (Meta), 91M parameters", filename="sam_vit_b_01ec64.pth",
        ),
        ModelInfo(
            "vit_l", "vit_l", 1_249_524_607, _META + "sam_vit_l_0b3195.pth",
            "sha256:3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            description="SAM ViT-L (Meta), 308M parameters", filename="sam_vit_l_0b3195.pth",
        ),
        ModelInfo(
            "vit_h", "vit_h", 2_564_550_879, _META + "sam_vit_h_4b8939.pth",
            "sha256:a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            description="SAM ViT-H (Meta), 636M parameters, the most accurate",
            filename="sam_vit_h_4b8939.pth",
        ),
        ModelInfo(
            "vit_t", "vit_t", 40_728_226,
            "https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/master/weights/mobile_sam.pt",
            "sha256:6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            description="MobileSAM (TinyViT encoder), 10M parameters, fast on CPU",
            filename="mobile_sam.pt",
        ),
        ModelInfo(
            "vit_b_lm", "vit_b", None, _BIOIMAGEIO + "diplomatic-bug/1.2/files/vit_b.pt",
            "xxh128:fe9252a29f3f4ea53c15a06de471e186",
            description=_MICRO_SAM.format(what="for light microscopy", arch="ViT-B"),
            filename="vit_b_lm.pt",
        ),
        ModelInfo(
            "vit_l_lm", "vit_l", None, _BIOIMAGEIO + "idealistic-rat/1.2/files/vit_l.pt",
            "xxh128:017f20677997d628426dec80a8018f9d",
            description=_MICRO_SAM.format(what="for light microscopy", arch="ViT-L"),
            filename="vit_l_lm.pt",
        ),
        ModelInfo(
            "vit_t_lm", "vit_t", None, _BIOIMAGEIO + "faithful-chicken/1.1/files/vit_t.pt",
            "xxh128:72ec5074774761a6e5c05a08942f981e",
            description=_MICRO_SAM.format(what="for light microscopy", arch="TinyViT"),
            filename="vit_t_lm.pt",
        ),
        ModelInfo(
            "vit_b_em_organelles", "vit_b", None, _BIOIMAGEIO + "noisy-ox/1.2/files/vit_b.pt",
            "xxh128:f3bf2ed83d691456bae2c3f9a05fb438",
            description=_MICRO_SAM.format(what="for EM organelles", arch="ViT-B"),
            filename="vit_b_em_organelles.pt",
        ),
        ModelInfo(
            "vit_l_em_organelles", "vit_l", None, _BIOIMAGEIO + "humorous-crab/1.2/files/vit_l.pt",
            "xxh128:810b084b6e51acdbf760a993d8619f2d",
            description=_MICRO_SAM.format(what="for EM organelles", arch="ViT-L"),
            filename="vit_l_em_organelles.pt",
        ),
        ModelInfo(
            "vit_t_em_organelles", "vit_t", None, _BIOIMAGEIO + "greedy-whale/1/files/vit_t.pt",
            "xxh128:253474720c497cce605e57c9b1d18fd9",
            description=_MICRO_SAM.format(what="for EM organelles", arch="TinyViT"),
            filename="vit_t_em_organelles.pt",
        ),
    ]
}

# Our own small model, shipped in the package; its entry is made on demand (hash and size
# come from the file, which the training code writes).
SHIPPED: dict[str, tuple[str, str]] = {
    DEFAULT_MODEL: (
        "tiny_synth.pt",
        "small SAM trained on synthetic microscopy, shipped with napari-sam (offline default)",
    ),
}

# Segment-everything settings recommended for a model, applied where the caller gives none
# (napari_sam.segment.everything_params). tiny-synth's IoU head was only trained on clicks inside
# objects, so its predicted IoUs are lower than SAM's and it does not flag background clicks:
# chosen by F1 of matched nuclei (IoU >= 0.5) on validation images (HELDOUT_PRESET, 256 px,
# seed 4242, not the benchmark's seeds; F1 0.79 with the phase-4 weights, 0.71 with phase 3's); see docs/training.md.
EVERYTHING_DEFAULTS: dict[str, dict[str, object]] = {
    DEFAULT_MODEL: {
        "pred_iou_thresh": 0.5,
        "stability_score_thresh": 0.85,
        "best_mask_only": True,
        "require_prompt_inside": True,
        "min_visible_fraction": 0.6,
    },
}
