"""The hospital's own formats: a DICOM series' instances as the source of what is written, a DICOM Segmentation
(SEG) and a TID 1500 measurement report (SR) out, and RECIST lengths read from such reports. Imports ``prompts``
and ``files``."""
