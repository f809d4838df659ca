"""Undo, redo and re-segmentation keep every slice the user edited by hand (the engine half; the scene half is in
test_slicer_module.py)."""

import numpy as np
import pytest

from MedSAMSlicerLib.volume.segment_history import SegmentHistory

SHAPE = (6, 10, 12)  # [k, j, i]


def box(k_slices, rows=slice(2, 7), columns=slice(3, 9)):
    mask = np.zeros(SHAPE, dtype=bool)
    mask[k_slices, rows, columns] = True
    return mask


def test_undo_and_redo_restore_exactly_what_medsam_wrote_over_several_levels():
    history = SegmentHistory()
    empty = np.zeros(SHAPE, dtype=bool)
    first = history.write("seg", 2, empty, box(slice(1, 4)), [1, 2, 3]).mask
    second = history.write("seg", 2, first, box(slice(1, 5), columns=slice(2, 10)), [1, 2, 3, 4]).mask
    assert history.can_undo and not history.can_redo
    back = history.undo(second)
    np.testing.assert_array_equal(back.mask, first)
    assert back.changed == [1, 2, 3, 4] and back.kept == []
    np.testing.assert_array_equal(history.undo(back.mask).mask, empty)
    assert not history.can_undo and history.can_redo
    np.testing.assert_array_equal(history.redo(empty).mask, first)
    np.testing.assert_array_equal(history.redo(first).mask, second)
    assert not history.can_redo


def test_undo_keeps_slices_edited_by_hand_and_says_which():
    history = SegmentHistory()
    written = history.write("seg", 2, np.zeros(SHAPE, dtype=bool), box(slice(1, 4)), [1, 2, 3]).mask
    edited = written.copy()
    edited[2, 0, 0] = True  # a stroke of the paint brush on slice 2
    edited[5, 5, 5] = True  # and one on a slice MedSAM never wrote
    outcome = history.undo(edited)
    assert outcome.changed == [1, 3] and outcome.kept == [2]
    np.testing.assert_array_equal(outcome.mask[2], edited[2])
    assert not outcome.mask[1].any() and not outcome.mask[3].any() and outcome.mask[5, 5, 5]
    redone = history.redo(outcome.mask)  # redo brings back the two slices it took
    np.testing.assert_array_equal(redone.mask[[1, 3]], written[[1, 3]])
    np.testing.assert_array_equal(redone.mask[2], edited[2])


def test_undo_of_a_step_edited_everywhere_changes_nothing_and_is_dropped():
    history = SegmentHistory()
    written = history.write("seg", 2, np.zeros(SHAPE, dtype=bool), box(slice(2, 3)), [2]).mask
    edited = written.copy()
    edited[2] = False  # erased by hand
    outcome = history.undo(edited)
    assert outcome.changed == [] and outcome.kept == [2]
    np.testing.assert_array_equal(outcome.mask, edited)
    assert not history.can_undo and not history.can_redo


def test_a_new_write_keeps_hand_edited_slices_unless_told_to_overwrite():
    history = SegmentHistory()
    written = history.write("seg", 2, np.zeros(SHAPE, dtype=bool), box(slice(1, 5)), [1, 2, 3, 4]).mask
    edited = written.copy()
    edited[3, 2:7, 3:6] = False  # the user trimmed slice 3
    again = history.write("seg", 2, edited, box(slice(1, 5), columns=slice(1, 11)), [1, 2, 3, 4])
    assert again.kept == [3] and again.changed == [1, 2, 4]
    np.testing.assert_array_equal(again.mask[3], edited[3])
    assert history.edited_slices("seg", 2, again.mask, range(6)) == [3]
    forced = history.write("seg", 2, again.mask, box(slice(1, 5), columns=slice(1, 11)), [1, 2, 3, 4],
                           overwrite_edited=True)
    assert forced.kept == [] and forced.changed == [3]
    np.testing.assert_array_equal(history.undo(forced.mask).mask[3], edited[3])  # undo brings the hand edit back


def test_what_was_drawn_before_medsam_ever_wrote_is_the_users():
    history = SegmentHistory()
    drawn = box(slice(2, 3), rows=slice(0, 3))
    outcome = history.write("seg", 2, drawn, box(slice(1, 4)), [1, 2, 3])
    assert outcome.kept == [2] and outcome.changed == [1, 3]
    np.testing.assert_array_equal(outcome.mask[2], drawn[2])
    undone = history.undo(outcome.mask)
    np.testing.assert_array_equal(undone.mask, drawn)
    assert history.edited_slices("seg", 2, undone.mask, [1, 2, 3]) == [2]  # still the user's after the undo


def test_segments_and_axes_are_kept_apart():
    history = SegmentHistory()
    empty = np.zeros(SHAPE, dtype=bool)
    history.write("a", 2, empty, box(slice(1, 2)), [1])
    history.write("b", 0, empty, box(slice(None)), [4])
    assert history.next_undo_target == "b"
    assert history.edited_slices("a", 0, box(slice(1, 2)), [4]) == [4]  # 'a' along I was never written
    history.forget("b")
    assert history.next_undo_target == "a"


def test_a_new_write_drops_the_redo_steps():
    history = SegmentHistory()
    written = history.write("seg", 2, np.zeros(SHAPE, dtype=bool), box(slice(1, 2)), [1]).mask
    history.undo(written)
    assert history.can_redo
    history.write("seg", 2, np.zeros(SHAPE, dtype=bool), box(slice(2, 3)), [2])
    assert not history.can_redo


@pytest.mark.parametrize("steps", [3, 60])
def test_the_history_is_bounded(steps):
    history = SegmentHistory(max_steps=50)
    mask = np.zeros(SHAPE, dtype=bool)
    for n in range(steps):
        mask = history.write("seg", 2, mask, box(slice(1, 2), columns=slice(0, n % 11 + 1)), [1]).mask
    undone = 0
    while history.can_undo:
        mask = history.undo(mask).mask
        undone += 1
    assert undone == min(steps, 50)
