"""Undo, redo and re-segmentation keep every slice the user edited by hand (the engine half; the scene half is in
test_slicer_module.py). The history reads and writes planes; these tests keep a whole [k, j, i] segment and hand it
the planes of the slices concerned, as the module does with the segment in the scene."""

import numpy as np
import pytest

from MedSAMSlicerLib.prompts.geometry import slice_indexer
from MedSAMSlicerLib.volume.segment_history import SegmentHistory

SHAPE = (6, 10, 12)  # [k, j, i]


def box(k_slices, rows=slice(2, 7), columns=slice(3, 9)):
    mask = np.zeros(SHAPE, dtype=bool)
    mask[k_slices, rows, columns] = True
    return mask


def planes(segment, axis, slices):
    return {index: segment[slice_indexer(axis, index)].copy() for index in slices}


def applied(segment, axis, outcome):
    result = segment.copy()
    for index, plane in outcome.planes.items():
        result[slice_indexer(axis, index)] = plane
    return result


def write(history, target, axis, segment, mask, slices, overwrite_edited=False):
    """MedSAM's ``mask`` written on ``slices`` of ``segment``: (the segment after, the outcome)."""
    outcome = history.write(target, axis, planes(segment, axis, slices), planes(mask, axis, slices), overwrite_edited)
    return applied(segment, axis, outcome), outcome


def move(history, segment, undo=True):
    step = history.next_undo if undo else history.next_redo
    current = planes(segment, step.axis, step.slices) if step else {}
    outcome = history.undo(current) if undo else history.redo(current)
    return applied(segment, step.axis if step else 2, outcome), outcome


def test_undo_and_redo_restore_exactly_what_medsam_wrote_over_several_levels():
    history = SegmentHistory()
    empty = np.zeros(SHAPE, dtype=bool)
    first, _ = write(history, "seg", 2, empty, box(slice(1, 4)), [1, 2, 3])
    second, _ = write(history, "seg", 2, first, box(slice(1, 5), columns=slice(2, 10)), [1, 2, 3, 4])
    assert history.can_undo and not history.can_redo
    assert history.next_undo.slices == [1, 2, 3, 4]
    back, outcome = move(history, second)
    np.testing.assert_array_equal(back, first)
    assert outcome.changed == [1, 2, 3, 4] and outcome.kept == []
    np.testing.assert_array_equal(move(history, back)[0], empty)
    assert not history.can_undo and history.can_redo
    np.testing.assert_array_equal(move(history, empty, undo=False)[0], first)
    np.testing.assert_array_equal(move(history, first, undo=False)[0], second)
    assert not history.can_redo


def test_undo_keeps_slices_edited_by_hand_and_says_which():
    history = SegmentHistory()
    written, _ = write(history, "seg", 2, np.zeros(SHAPE, dtype=bool), box(slice(1, 4)), [1, 2, 3])
    edited = written.copy()
    edited[2, 0, 0] = True  # a stroke of the paint brush on slice 2
    edited[5, 5, 5] = True  # and one on a slice MedSAM never wrote
    after, outcome = move(history, edited)
    assert outcome.changed == [1, 3] and outcome.kept == [2]
    np.testing.assert_array_equal(after[2], edited[2])
    assert not after[1].any() and not after[3].any() and after[5, 5, 5]
    redone, _ = move(history, after, undo=False)  # redo brings back the two slices it took
    np.testing.assert_array_equal(redone[[1, 3]], written[[1, 3]])
    np.testing.assert_array_equal(redone[2], edited[2])


def test_undo_of_a_step_edited_everywhere_changes_nothing_and_is_dropped():
    history = SegmentHistory()
    written, _ = write(history, "seg", 2, np.zeros(SHAPE, dtype=bool), box(slice(2, 3)), [2])
    edited = written.copy()
    edited[2] = False  # erased by hand
    after, outcome = move(history, edited)
    assert outcome.changed == [] and outcome.kept == [2]
    np.testing.assert_array_equal(after, edited)
    assert not history.can_undo and not history.can_redo


def test_a_new_write_keeps_hand_edited_slices_unless_told_to_overwrite():
    history = SegmentHistory()
    written, _ = write(history, "seg", 2, np.zeros(SHAPE, dtype=bool), box(slice(1, 5)), [1, 2, 3, 4])
    edited = written.copy()
    edited[3, 2:7, 3:6] = False  # the user trimmed slice 3
    again, outcome = write(history, "seg", 2, edited, box(slice(1, 5), columns=slice(1, 11)), [1, 2, 3, 4])
    assert outcome.kept == [3] and outcome.changed == [1, 2, 4]
    np.testing.assert_array_equal(again[3], edited[3])
    assert history.edited_slices("seg", 2, planes(again, 2, range(6))) == [3]
    forced, outcome = write(history, "seg", 2, again, box(slice(1, 5), columns=slice(1, 11)), [1, 2, 3, 4],
                            overwrite_edited=True)
    assert outcome.kept == [] and outcome.changed == [3]
    np.testing.assert_array_equal(move(history, forced)[0][3], edited[3])  # undo brings the hand edit back


def test_what_was_drawn_before_medsam_ever_wrote_is_the_users():
    history = SegmentHistory()
    drawn = box(slice(2, 3), rows=slice(0, 3))
    after, outcome = write(history, "seg", 2, drawn, box(slice(1, 4)), [1, 2, 3])
    assert outcome.kept == [2] and outcome.changed == [1, 3]
    np.testing.assert_array_equal(after[2], drawn[2])
    undone, _ = move(history, after)
    np.testing.assert_array_equal(undone, drawn)
    assert history.edited_slices("seg", 2, planes(undone, 2, [1, 2, 3])) == [2]  # still the user's after the undo


def test_segments_and_axes_are_kept_apart():
    history = SegmentHistory()
    empty = np.zeros(SHAPE, dtype=bool)
    write(history, "a", 2, empty, box(slice(1, 2)), [1])
    write(history, "b", 0, empty, box(slice(None)), [4])
    assert history.next_undo.target == "b" and history.targets == ["a", "b"]
    assert history.edited_slices("a", 0, planes(box(slice(1, 2)), 0, [4])) == [4]  # 'a' along I was never written
    history.forget("b")
    assert history.next_undo.target == "a" and history.targets == ["a"]


def test_a_new_write_drops_the_redo_steps():
    history = SegmentHistory()
    written, _ = write(history, "seg", 2, np.zeros(SHAPE, dtype=bool), box(slice(1, 2)), [1])
    move(history, written)
    assert history.can_redo
    write(history, "seg", 2, np.zeros(SHAPE, dtype=bool), box(slice(2, 3)), [2])
    assert not history.can_redo


def test_planes_of_other_slices_are_refused():
    history = SegmentHistory()
    empty = np.zeros(SHAPE, dtype=bool)
    with pytest.raises(ValueError, match="different slices"):
        history.write("seg", 2, planes(empty, 2, [1, 2]), planes(box(slice(1, 3)), 2, [1]))
    write(history, "seg", 2, empty, box(slice(1, 3)), [1, 2])
    with pytest.raises(ValueError, match="slice 2 of the step was not read"):
        history.undo(planes(empty, 2, [1]))


@pytest.mark.parametrize("steps", [3, 60])
def test_the_history_is_bounded(steps):
    history = SegmentHistory(max_steps=50)
    mask = np.zeros(SHAPE, dtype=bool)
    for n in range(steps):
        mask, _ = write(history, "seg", 2, mask, box(slice(1, 2), columns=slice(0, n % 11 + 1)), [1])
    undone = 0
    while history.can_undo:
        mask, _ = move(history, mask)
        undone += 1
    assert undone == min(steps, 50)


def test_after_an_undo_medsam_may_write_again_where_the_undo_left_its_own_earlier_result():
    history = SegmentHistory()
    empty = np.zeros(SHAPE, dtype=bool)
    first, _ = write(history, "seg", 2, empty, box(slice(1, 4)), [1, 2, 3])
    second, _ = write(history, "seg", 2, first, box(slice(1, 4), columns=slice(2, 10)), [1, 2, 3])
    back, _ = move(history, second)  # the slices hold MedSAM's first result again: MedSAM's, not a hand edit
    again, outcome = write(history, "seg", 2, back, box(slice(1, 4), rows=slice(1, 8)), [1, 2, 3])
    assert outcome.kept == [] and outcome.changed == [1, 2, 3]
    np.testing.assert_array_equal(again, box(slice(1, 4), rows=slice(1, 8)))
    back, _ = move(history, again)
    nothing, _ = move(history, back)  # back to before MedSAM ever wrote: empty slices are nobody's edit either
    np.testing.assert_array_equal(nothing, empty)
    _, outcome = write(history, "seg", 2, nothing, box(slice(1, 4)), [1, 2, 3])
    assert outcome.kept == [] and outcome.changed == [1, 2, 3]
