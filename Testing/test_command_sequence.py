"""The off-thread installer: steps in order, output shown as it comes, failure and cancel stop it (with a fake pip)."""

import sys
import time

from MedSAMSlicerLib.command_sequence import CommandSequence, Step


def fake_pip(*lines, code=0, sleep=0.0):
    """A command that prints ``lines`` as pip would, optionally waits, and exits with ``code``."""
    script = "import sys, time\n" + "".join(f"print({line!r}, flush=True)\n" for line in lines)
    script += f"time.sleep({sleep})\nsys.exit({code})\n"
    return [sys.executable, "-c", script]


def test_steps_run_in_order_and_their_output_is_shown_and_logged(tmp_path):
    job = CommandSequence([Step("PyTorch", fake_pip("Collecting torch", "Successfully installed torch-2.14.1")),
                           Step("packages", fake_pip("Successfully installed segment-anything"))],
                          tmp_path / "install.log")
    assert job.wait(60)
    assert job.succeeded and job.returncode == 0
    assert job.progress == (2, 2, "packages")
    assert job.tail() == ["Collecting torch", "Successfully installed torch-2.14.1",
                          "Successfully installed segment-anything"]
    log = (tmp_path / "install.log").read_text(encoding="utf-8")
    assert "Collecting torch" in log and log.count("$ ") == 2


def test_a_failing_step_stops_the_sequence_and_keeps_its_last_lines(tmp_path):
    job = CommandSequence([Step("PyTorch", fake_pip("ERROR: No matching distribution found for torch", code=1)),
                           Step("packages", fake_pip("never printed"))], tmp_path / "install.log")
    assert job.wait(60)
    assert not job.succeeded and job.returncode == 1
    assert job.progress == (0, 2, "PyTorch")  # stopped at the first step
    assert job.tail(1) == ["ERROR: No matching distribution found for torch"]
    assert "never printed" not in (tmp_path / "install.log").read_text(encoding="utf-8")


def test_cancel_stops_the_running_command_and_the_steps_after_it(tmp_path):
    job = CommandSequence([Step("PyTorch", fake_pip("Downloading torch (2.1 GB)", sleep=60)),
                           Step("packages", fake_pip("never printed"))], tmp_path / "install.log")
    deadline = time.monotonic() + 30
    while not job.tail() and time.monotonic() < deadline:  # the first line has arrived: pip is running
        time.sleep(0.05)
    started = time.monotonic()
    job.cancel()
    assert job.wait(30) and time.monotonic() - started < 10  # not the 60 s the command would have taken
    assert job.cancelled and not job.succeeded
    assert job.progress[0] == 0
    assert "never printed" not in job.tail()


def test_a_command_that_cannot_start_fails_with_a_line_saying_so(tmp_path):
    job = CommandSequence([Step("PyTorch", [str(tmp_path / "no-such-python"), "-m", "pip"])], tmp_path / "install.log")
    assert job.wait(30)
    assert job.returncode == 127 and job.tail(1)[0].startswith("cannot start ")
