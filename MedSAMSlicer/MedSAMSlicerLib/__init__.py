"""MedSAMSlicer's engine: MedSAM inference from RECIST markers or boxes, with cached slice embeddings.

Pure Python (torch, segment-anything, SimpleITK, numpy): it never imports Slicer, Qt or VTK, so
the command line, the tests and the Slicer module all share it. Start with
``model_registry.load_model`` and ``session.SegmentationSession``.
"""

__version__ = "0.1.0"
