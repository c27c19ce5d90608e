"""Pure-torch Segment Anything family: ViT-B/L/H and TinyViT image encoders, prompt encoder,
two-way transformer and mask decoder, with state-dict names identical to the official checkpoints."""

from napari_sam.model.config import (
    CONFIGS,
    ArchitectureError,
    SamConfig,
    build_sam,
    check_state_dict,
    infer_config,
)
from napari_sam.model.sam import Sam

__all__ = ["CONFIGS", "ArchitectureError", "SamConfig", "Sam", "build_sam", "check_state_dict", "infer_config"]
