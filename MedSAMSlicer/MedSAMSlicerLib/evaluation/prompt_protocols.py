"""The prompt protocols of the MedSAM and SAM studies, by name (``evaluate --protocol``; simulated in
``volume_evaluation``).

Apart so that the command line lists them without importing the evaluation (scipy, the session).
"""

BOX_PROTOCOLS = ("box-each", "box-largest", "box-all")
POINT_PROTOCOLS = ("point-largest", "point-each", "iterative-points")
PROTOCOLS = BOX_PROTOCOLS + POINT_PROTOCOLS + ("recist-sparse",)
