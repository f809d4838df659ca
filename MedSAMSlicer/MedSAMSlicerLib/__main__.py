"""``python -m MedSAMSlicerLib`` runs the ``medsam-slicer`` command."""

import sys

from .cli import main

sys.exit(main())
