"""Trust, fitted at export: temperature scaling for the probabilities and an out-of-distribution
score on the network's pooled features, both carried inside the ONNX file (``btxrd.trust``).

``calibration`` and ``ood`` are numpy (the reference the parity check compares the graph
against); ``fit`` runs the model over labelled images (any layout ``btxrd.runtime.labels.folders``
reads) and fits both, with the values of ``defaults``; ``taps`` says where the score looks;
``sets`` and ``measure`` are ``make trust``, the benchmark that chose the shipped score.
"""
