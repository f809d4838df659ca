"""Prompts and what is measured on slices: geometry, box and RECIST prompt types, interpolation between
annotated slices, prompts simulated from ground truth, volume and longest diameter. Imports no
other layer."""
