"""The training-side explainer: Grad-CAM from the PyTorch checkpoint (``btxrd-explain``)."""
