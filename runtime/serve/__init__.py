"""``btxrd-serve``: a local web page and a small HTTP API over the runtime's ``Classifier``.

``service`` (uploads in, the records ``btxrd-run --json`` writes out, heatmaps) and ``views``
(the pictures) need nothing beyond the runtime; ``app`` is the HTTP layer (Starlette, extra
``[serve]``) and ``cli`` the command, which says how to install the extra when it is missing.
"""
