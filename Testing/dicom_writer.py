"""Single-frame DICOM series written from an array, as a scanner writes them: one complete CT or MR Image
Storage instance per slice (every attribute those IODs require, so ``dciodvfy`` finds no error in them),
in any orientation, with slices that may run against their normal and files named out of order."""

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

STORAGE = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def write_dicom_series(folder: Path, array: np.ndarray, spacing_ij: Tuple[float, float], slice_step: float,
                       modality: str = "CT", orientation: Sequence[float] = AXIAL,
                       origin: Sequence[float] = (0.0, 0.0, 0.0), file_order: Optional[Sequence[int]] = None,
                       patient: str = "Phantom^Test") -> list:
    """One file per slice of the ``[k, j, i]`` integer ``array``; returns the SOP instance UIDs in ``k`` order.

    Slice ``k`` lies at ``origin + k * slice_step * normal`` (a negative step runs the slices against the
    normal, as a feet-first series does); ``file_order[n]`` is the slice written as the n-th file name."""
    folder.mkdir(parents=True, exist_ok=True)
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, column)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    uids = [generate_uid() for _ in range(array.shape[0])]
    for number, k in enumerate(range(array.shape[0]) if file_order is None else file_order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = STORAGE[modality], uids[k]
        meta.TransferSyntaxUID, meta.ImplementationClassUID = ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = STORAGE[modality], uids[k], modality
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if modality == "CT" else "OTHER"]
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient, patient, "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.ContentDate, ds.ContentTime = "20260101", "120000", "20260101", "120000"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "A1", "", "1"
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 1, k + 1, 1
        ds.Manufacturer, ds.PositionReferenceIndicator, ds.PatientPosition = "MedSAMSlicer tests", "", "HFS"
        ds.Laterality = ""
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(origin, float) + k * slice_step * normal]
        ds.SliceThickness, ds.PixelSpacing = f"{abs(slice_step):g}", [f"{spacing_ij[1]:g}", f"{spacing_ij[0]:g}"]
        ds.SliceLocation = f"{k * slice_step:g}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = array.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if modality == "CT":
            ds.KVP, ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "120", "0", "1", "HU"
        else:
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
            ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength, ds.MagneticFieldStrength = "500", "15", "1", "1.5"
        ds.PixelData = np.ascontiguousarray(array[k], dtype="<i2").tobytes()
        ds.save_as(folder / f"slice{number}.dcm", enforce_file_format=True)
    return uids
