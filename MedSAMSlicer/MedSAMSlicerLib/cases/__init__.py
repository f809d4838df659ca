"""Image files in, segmentation files out: one case (``medsam-slicer segment``) and a cohort of cases
(``batch``). Imports ``volume`` and the layers below."""
