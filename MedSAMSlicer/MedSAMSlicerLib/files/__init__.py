"""The files users hand in and get back: images, Slicer markups, prompt files, JSON, atomic outputs,
the sample case. Imports only ``prompts``."""
