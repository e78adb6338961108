"""The model: an exported btxrd ONNX file, opened with onnxruntime and held to its contract.

- ``contract``: the one place that says what an exported file carries (inputs, outputs, the
  metadata keys: class names, preprocessing, calibration, the gate);
- ``onnxheader``: what the file declares about itself, read without the ``onnx`` package;
- ``session``: the onnxruntime session, checked against the contract (``ModelInfo``);
- ``preprocess`` and ``postprocess``: pixels to the input tensor, logits to probabilities;
- ``verdict``: the out-of-distribution gate's word on one input, and every way it is said;
- ``classifier``: the Python API (``Classifier``, ``Prediction``) every command uses;
- ``selftest``: the drawn images whose PyTorch scores the file stores, checked at load.
"""
