"""What a moved prompt costs on Slicer's main thread: one slice of the segment read and written, against the whole
volume exported and imported through temporary labelmap nodes (the module before issue 21: ``slicer.util``'s
``arrayFromSegmentBinaryLabelmap`` twice and ``updateSegmentBinaryLabelmapFromArray`` once per write).

    python benchmarks/segment_writes.py [--shape 300 512 512] [--repeat 5]

Runs on the real MRML of ``slicer-core`` (``Testing/slicer_harness``), a segment already holding a 40-slice lesion and
another segment beside it; prints the median seconds of each path, measured side by side in one run.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "MedSAMSlicer"), str(ROOT / "Testing")]


def median_seconds(work, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), metavar=("K", "J", "I"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    import numpy as np
    import slicer_harness
    module = slicer_harness.install()
    import slicer

    shape = tuple(args.shape)
    volume = slicer.util.addVolumeFromArray(np.zeros(shape, np.int16), ijkToRAS=np.diag([0.7, 0.7, 1.25, 1.0]))
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    logic = module.MedSAMSlicerLogic()
    other = logic.ensureSegment(segmentation, volume, "", "other")
    lesion = logic.ensureSegment(segmentation, volume, "", "lesion")
    mask = np.zeros(shape, np.uint8)
    middle = shape[0] // 2
    mask[middle - 20:middle + 20, 200:300, 200:320] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, lesion, volume)
    beside = np.zeros(shape, np.uint8)
    beside[:, 50:120, 50:120] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(beside, segmentation, other, volume)
    plane = mask[middle].astype(bool)
    plane[200:210] = False  # the moved prompt's new result on its slice

    def whole_volume():
        current = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, lesion, volume)
        current[middle] = plane
        slicer.util.updateSegmentBinaryLabelmapFromArray(current, segmentation, lesion, volume)
        slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, lesion, volume)  # the statistics read it again

    def one_slice():
        logic.readSegmentSlices(volume, segmentation, lesion, 2, [middle])
        logic.writeSegmentSlices(volume, segmentation, lesion, 2, {middle: plane})

    whole = median_seconds(whole_volume, args.repeat)
    single = median_seconds(one_slice, args.repeat)
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, other, volume), beside)
    print(f"volume {shape[2]}x{shape[1]}x{shape[0]}: whole volume exported and imported {whole:.3f} s, "
          f"one slice read and written {single * 1000:.1f} ms ({whole / single:.0f}x), median of {args.repeat}")
    logic.close()


if __name__ == "__main__":
    main()
