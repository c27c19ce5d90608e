"""Fine-tuning, synthetic microscopy data and evaluation protocols for napari-sam."""
