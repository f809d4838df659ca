"""A volume at work: intensity normalisation, the slices a worker encodes, the embedding cache and its
background worker, the segmentation session with its refined mode and its propagation beyond the
annotated slices, background jobs and the undo history of a segment. Imports ``models`` and the layers below."""
