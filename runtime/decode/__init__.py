"""Decoding: an image file (or an open Pillow image) in, an upright 8-bit "L" or "RGB" image out.

- ``formats``: the registry of formats btxrd reads; every suffix list, message, the page's file
  chooser and export's parity sources derive from it;
- ``image``: the one entry point (``load_image``, ``decode_pil``): file checks, then DICOM or
  Pillow; ``decoded``: what every decoder returns, and the header size check they all make;
- ``pillow``: JPEG, PNG, TIFF and BMP, with ``tiff`` (what Pillow misreads in TIFF, repaired from
  the named tags), ``wide`` (16-bit colour) and ``tiles`` (the raw modes both repairs swap);
- ``dicom``: pydicom (extra ``[dicom]``), imported only when a DICOM file is met;
- ``pixels``: deep samples to 8 bits in bands of rows, and the blank check;
- ``quiet``: the decoders' own warnings silenced for the whole process;
- ``inputs``: the command line's names and folders, as an ordered list of image files.
"""
