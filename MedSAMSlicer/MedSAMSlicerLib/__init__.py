"""MedSAMSlicer's engine: MedSAM inference from RECIST markers or boxes, with cached slice embeddings.

Pure Python (torch, segment-anything, SimpleITK, numpy): it never imports Slicer, Qt or VTK, so
the command line, the tests and the Slicer module all share it. Its layers, each a subpackage
importing only those before it: ``prompts``, ``files``, ``dicom``, ``models``, ``volume``, then ``evaluation``,
``training`` and ``cases``; ``cli``, ``module_state`` and ``command_sequence`` sit on top, ``errors``
beneath everything. Start with ``models.model_registry.load_model`` and
``volume.session.SegmentationSession``.
"""

__version__ = "0.1.0"
