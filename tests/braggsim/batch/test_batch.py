"""Batch processing without a cluster: frame expansion, multi-image reads, the output
folder, the in-process scheduler, progress, the lazy stack and the CLI's errors."""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from braggsim.batch import FrameRef, expand_frames, iter_batch, run_batch
from braggsim.batch.pipeline import ProcessOptions, frame_stem, process_frame
from braggsim.batch.progress import ProgressPrinter, progress_line
from braggsim.batch.store import OutputFolderError
from braggsim.cli import main
from braggsim.io import FrameReadError, image_count, read_frame
from tests.conftest import DATA

from . import doubles as batch_doubles

CROPS = DATA / "thaumatin_crops"
NAMES = ["thau_3_2_0003_c512", "thau_3_2_0013_c512", "thau_3_2_0016_c512"]
THAUMATIN = ["--cell", "57.8", "57.8", "150", "90", "90", "90", "--space-group", "P41212"]


def options():
    return ProcessOptions(cell=(57.8, 57.8, 150.0, 90.0, 90.0, 90.0), space_group="P41212")


@pytest.fixture
def frames(tmp_path):
    """Six frames in a folder: the three crops and three copies under other names."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, name in enumerate(NAMES * 2):
        shutil.copy(CROPS / f"{name}.cbf.bz2", folder / f"f_{i + 1}.cbf.bz2")
    return folder


def summary(out) -> dict:
    """stem -> row of DIR/summary.csv."""
    with open(Path(out) / "summary.csv", newline="") as handle:
        return {frame_stem(row["frame"]): row for row in csv.DictReader(handle)}


def eiger_series(folder: Path, per_file=(2, 1)) -> Path:
    """An Eiger-like master with external links to data files holding the crops' pixels."""
    import h5py

    images = [read_frame(CROPS / f"{n}.cbf.bz2").data.astype(np.int32) for n in NAMES]
    stack = np.stack([images[i % len(images)] for i in range(sum(per_file))])
    master = folder / "series_master.h5"
    start = 0
    with h5py.File(master, "w") as h5:
        for number, count in enumerate(per_file, start=1):
            data_name = f"series_data_{number:06d}.h5"
            with h5py.File(folder / data_name, "w") as data_file:
                data_file["entry/data/data"] = stack[start : start + count]
            h5[f"entry/data/data_{number:06d}"] = h5py.ExternalLink(data_name, "entry/data/data")
            start += count
        # the crops' header geometry (the CBF's Beam_xy counts pixels as NeXus does)
        detector = h5.create_group("entry/instrument/detector")
        detector["x_pixel_size"] = 172e-6
        detector["detector_distance"] = 0.351
        detector["beam_center_x"], detector["beam_center_y"] = 255.61, 255.96
        detector["detectorSpecific/countrate_correction_count_cutoff"] = 115897
        h5["entry/instrument/beam/incident_wavelength"] = 0.96859
    return master


# ------------------------------------------------------------------- multi-image reads
def test_read_frame_index_addresses_images_across_data_files(tmp_path):
    master = eiger_series(tmp_path, per_file=(2, 2))
    crops = [read_frame(CROPS / f"{n}.cbf.bz2").data for n in NAMES]
    assert image_count(master) == 4
    for index, expected in enumerate([crops[0], crops[1], crops[2], crops[0]]):
        frame = read_frame(master, index)
        np.testing.assert_array_equal(frame.data, expected)
        assert frame.index == index and frame.distance_mm == pytest.approx(351.0)
    np.testing.assert_array_equal(read_frame(master).data, crops[0])  # no index: the first
    with pytest.raises(FrameReadError, match="image index 4 is out of range .*4 images"):
        read_frame(master, 4)
    with pytest.raises(FrameReadError, match="non-negative"):
        read_frame(master, -1)
    with pytest.raises(FrameReadError, match="holds one image"):
        read_frame(CROPS / f"{NAMES[0]}.cbf.bz2", 1)
    assert image_count(CROPS / f"{NAMES[0]}.cbf.bz2") == 1
    # a missing data file in the middle would shift every later index: refused
    (tmp_path / "series_data_000001.h5").unlink()
    with pytest.raises(FrameReadError, match="data_000001 is missing but later ones exist"):
        image_count(master)


# ---------------------------------------------------------------------- expansion
def test_expand_folder_pattern_and_master(tmp_path, frames):
    by_folder = expand_frames([frames])
    assert [r.name for r in by_folder] == [f"f_{i}" for i in range(1, 7)]
    assert all(os.path.isabs(r.path) and r.index is None and r.source == r.path for r in by_folder)
    # natural order (f_2 before f_10) and duplicates dropped
    shutil.copy(frames / "f_1.cbf.bz2", frames / "f_10.cbf.bz2")
    by_pattern = expand_frames([str(frames / "f_*.cbf.bz2"), str(frames / "f_1.cbf.bz2")])
    assert [r.name for r in by_pattern] == ["f_1", "f_2", "f_3", "f_4", "f_5", "f_6", "f_10"]

    series = tmp_path / "series"
    series.mkdir()
    master = eiger_series(series, per_file=(2, 1))
    (series / "notes.txt").write_text("not a frame")
    refs = expand_frames([series])  # the data files are reached through the master only
    assert refs == [FrameRef(str(master), 0), FrameRef(str(master), 1), FrameRef(str(master), 2)]
    assert [r.name for r in refs] == ["series_master_00000", "series_master_00001", "series_master_00002"]
    assert refs[1].source == (str(master), 1) and refs[1].frame == f"{master}#1" and str(refs[1]) == refs[1].frame
    # the pipeline's naming rule, which its writer uses; a summary's frame names its ref
    assert all(r.name == frame_stem(r.frame) for r in refs + by_pattern)
    assert all(FrameRef.from_frame(r.frame) == r for r in refs + by_pattern)


def test_expand_errors(tmp_path, frames):
    with pytest.raises(FileNotFoundError, match="no files match"):
        expand_frames([str(tmp_path / "*.cbf")])
    with pytest.raises(FileNotFoundError, match="no such frame file or folder"):
        expand_frames([str(tmp_path / "missing.cbf")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no frame files"):
        expand_frames([tmp_path / "empty"])
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(frames / "f_1.cbf.bz2", other / "f_1.cbf")
    with pytest.raises(ValueError, match="would both be written as 'f_1'"):
        expand_frames([frames, other])
    # a file that is not a readable HDF5 file is one frame, to fail when processed
    (tmp_path / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\nnot really")
    assert expand_frames([tmp_path / "broken.h5"]) == [FrameRef(str(tmp_path / "broken.h5"))]


# ------------------------------------------------------------- in-process batches
def test_in_process_batch_writes_and_a_rerun_skips(tmp_path, frames):
    out = tmp_path / "out"
    seen = []
    final = run_batch(
        [frames],
        options(),
        out,
        scheduler="none",
        frame_function=batch_doubles.count_spots,
        on_progress=seen.append,
    )
    assert final.state == "finished" and final.done == 6 and final.skipped == 0
    rows = summary(out)
    assert list(rows) == [f"f_{i}" for i in range(1, 7)]
    # crops of 0003/0013 have 62/48 bright groups, the blank 0016 none
    assert [rows[f"f_{i}"]["status"] for i in range(1, 7)] == ["indexed", "indexed", "no-lattice"] * 2
    assert [int(rows[f"f_{i}"]["n_spots"]) for i in range(1, 4)] == [62, 48, 0]
    assert rows["f_2"]["frame"] == str(frames / "f_2.cbf.bz2")
    assert final.counts == {"indexed": 4, "no-lattice": 2}
    saved = json.loads((out / "f_2.json").read_text())
    assert saved["status"] == "indexed" and saved["n_spots"] == 48
    assert json.loads((out / "options.json").read_text())["options"] == options().to_dict()
    assert [p.done for p in seen if p.result is not None] == [1, 2, 3, 4, 5, 6]
    assert not list(out.glob(".*part"))  # nothing half-written left behind

    calls = []

    def counting(source, options):
        calls.append(source)
        return batch_doubles.count_spots(source, options)

    (out / "f_5.json").unlink()  # a frame whose files were lost is not done
    again = run_batch([frames], options(), out, scheduler="none", frame_function=counting)
    assert again.skipped == 5 and again.done == 1 and calls == [str(frames / "f_5.cbf.bz2")]
    untimed = lambda table: {k: {f: v for f, v in row.items() if f != "time_s"} for k, row in table.items()}  # noqa: E731
    assert untimed(summary(out)) == untimed(rows)
    forced = run_batch([frames], options(), out, scheduler="none", frame_function=counting, force=True)
    assert forced.skipped == 0 and forced.done == 6 and len(calls) == 7


def test_one_frame_on_the_local_scheduler_runs_in_process(tmp_path, frames):
    seen = []
    final = run_batch(
        [frames / "f_1.cbf.bz2"],
        options(),
        tmp_path / "out",
        scheduler="local",
        frame_function=batch_doubles.count_spots,
        on_progress=seen.append,
    )
    assert final.done == 1 and seen[0].scheduler == "in-process, sequential"


def test_rerun_with_other_options_is_refused(tmp_path, frames):
    out = tmp_path / "out"
    run_batch([frames / "f_1.cbf.bz2"], options(), out, scheduler="none", frame_function=batch_doubles.count_spots)
    other = ProcessOptions(cell=(57.8, 57.8, 150.0, 90.0, 90.0, 90.0), space_group="P43212")
    with pytest.raises(OutputFolderError, match="other options \\(space_group differ\\)"):
        run_batch([frames], other, out, scheduler="none", frame_function=batch_doubles.count_spots)
    assert list(summary(out)) == ["f_1"]
    final = run_batch([frames], other, out, scheduler="none", frame_function=batch_doubles.count_spots, force=True)
    assert final.done == 6
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputFolderError, match="not a folder"):
        run_batch([frames], other, tmp_path / "file", scheduler="none")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "summary.csv").write_text("a,b\n1,2\n")
    with pytest.raises(OutputFolderError, match="not a braggsim summary"):
        run_batch([frames], other, foreign, scheduler="none")


def test_a_frame_that_raises_or_is_corrupt_fails_and_the_rest_go_on(tmp_path, frames):
    (frames / "f_4.cbf.bz2").write_bytes(b"BZh91AY&SY" + b"\0" * 50)  # a broken bzip2 stream
    raising = functools.partial(batch_doubles.raises_on, bad="f_2")
    final = run_batch([frames], options(), tmp_path / "out", scheduler="none", frame_function=raising)
    rows = summary(tmp_path / "out")
    assert final.state == "finished" and len(rows) == 6
    reasons = {n: json.loads((tmp_path / "out" / f"{n}.json").read_text())["reason"] for n in ("f_2", "f_4")}
    assert rows["f_2"]["status"] == "failed"
    assert reasons["f_2"].startswith("RuntimeError: deliberate failure on f_2 (at doubles.py:")
    assert rows["f_4"]["status"] == "failed" and "f_4.cbf.bz2" in reasons["f_4"]
    assert [rows[f"f_{i}"]["status"] for i in (1, 3, 5, 6)] == ["indexed", "no-lattice", "indexed", "no-lattice"]


def test_interrupt_and_cancel_keep_what_is_done(tmp_path, frames):
    interrupting = functools.partial(batch_doubles.interrupts_on, bad="f_4")
    final = run_batch([frames], options(), tmp_path / "a", scheduler="none", frame_function=interrupting)
    assert final.state == "interrupted" and final.done == 3
    assert list(summary(tmp_path / "a")) == ["f_1", "f_2", "f_3"]
    assert not (tmp_path / "a" / "f_4.json").exists()

    states = []

    def stop_in_callback(progress):  # a Ctrl-C while the caller handles a progress step
        states.append(progress.state)
        if progress.done == 2 and progress.state == "running":
            raise KeyboardInterrupt

    final = run_batch(
        [frames],
        options(),
        tmp_path / "d",
        scheduler="none",
        frame_function=batch_doubles.count_spots,
        on_progress=stop_in_callback,
    )
    assert final.state == "interrupted" and final.done == 2 and states[-2:] == ["stopping", "interrupted"]
    assert list(summary(tmp_path / "d")) == ["f_1", "f_2"]

    cancel = threading.Event()
    steps = []
    for progress in iter_batch(
        [frames],
        options(),
        tmp_path / "b",
        scheduler="none",
        frame_function=batch_doubles.count_spots,
        cancel=cancel,
    ):
        steps.append(progress.state)
        if progress.done == 2:
            cancel.set()
    assert steps[-1] == "cancelled" and list(summary(tmp_path / "b")) == ["f_1", "f_2"]

    # closing the generator (a GUI dropping its worker) stops it and flushes the summary
    batch = iter_batch([frames], options(), tmp_path / "c", scheduler="none", frame_function=batch_doubles.count_spots)
    for progress in batch:
        if progress.done == 1:
            batch.close()
    assert list(summary(tmp_path / "c")) == ["f_1"]


def test_frame_runs_with_one_torch_thread_and_seeds_from_its_name(tmp_path, frames):
    import torch

    threads = torch.get_num_threads()
    torch.manual_seed(5)
    expected_next = torch.rand(1).item()
    torch.manual_seed(5)
    run_batch([frames], options(), tmp_path / "out", scheduler="none", frame_function=batch_doubles.count_spots)
    assert torch.get_num_threads() == threads and torch.rand(1).item() == expected_next  # caller's state restored
    params = {n: json.loads((tmp_path / "out" / f"{n}.json").read_text())["parameters"] for n in ("f_1", "f_4")}
    assert params["f_1"]["torch_threads"] == 1
    assert params["f_1"]["pixel_sum"] == params["f_4"]["pixel_sum"]  # the same pixels ...
    assert params["f_1"]["torch_draw"] != params["f_4"]["torch_draw"]  # ... and each frame its own seed
    run_batch([frames], options(), tmp_path / "again", scheduler="none", frame_function=batch_doubles.count_spots)
    again = json.loads((tmp_path / "again" / "f_1.json").read_text())["parameters"]
    assert again["torch_draw"] == params["f_1"]["torch_draw"] and again["numpy_draw"] == params["f_1"]["numpy_draw"]


# ------------------------------------------------------------------------ progress
def test_progress_display(tmp_path, frames):
    stream = io.StringIO()
    run_batch(
        [frames],
        options(),
        tmp_path / "out",
        scheduler="none",
        frame_function=functools.partial(batch_doubles.raises_on, bad="f_3"),
        on_progress=ProgressPrinter(stream),
    )
    lines = stream.getvalue().splitlines()
    assert lines[0] == "processing 6 frames on in-process, sequential"
    assert lines[1].startswith(f"{frames / 'f_3.cbf.bz2'}: failed: RuntimeError: deliberate failure on f_3")
    assert lines[-1].startswith("6/6 frames  ") and lines[-1].endswith("failed 1, indexed 4, no-lattice 1")
    assert "\r" not in stream.getvalue()  # plain text when not a terminal

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    run_batch(
        [frames],
        options(),
        tmp_path / "t",
        scheduler="none",
        frame_function=batch_doubles.count_spots,
        on_progress=ProgressPrinter(terminal),
    )
    assert "\r\x1b[2K[########################] 6/6 frames" in terminal.getvalue()


def test_progress_line_eta():
    from braggsim.batch.runner import BatchProgress

    progress = BatchProgress(
        total=100, skipped=10, done=30, running=4, counts={"indexed": 35, "failed": 5}, elapsed_s=60.0
    )
    assert progress.frames_per_s == 0.5 and progress.eta_s == 120.0
    assert progress_line(progress, bar=False) == (
        "40/100 frames  (10 done before)  0.50 frames/s  ETA 2m00s  failed 5, indexed 35"
    )


# -------------------------------------------------------------------- lazy stack
def test_frame_stack_is_lazy_and_nan_for_a_bad_frame(tmp_path, frames, monkeypatch):
    import braggsim.batch.stack as stack_module

    (frames / "f_5.cbf.bz2").write_bytes(b"junk")
    reads = []
    real = stack_module.read_pixels
    monkeypatch.setattr(stack_module, "read_pixels", lambda ref: reads.append(ref.name) or real(ref))
    stack = stack_module.frame_stack([frames])
    assert stack.shape == (6, 512, 512) and stack.dtype == np.float32 and stack.chunksize == (1, 512, 512)
    assert reads == ["f_1"]  # the shape comes from the first frame, nothing else is read
    np.testing.assert_array_equal(stack[2].compute(), read_frame(frames / "f_3.cbf.bz2").data)
    assert reads == ["f_1", "f_3"]
    assert np.isnan(stack[4].compute()).all()
    with pytest.raises(FrameReadError):
        stack_module.frame_stack([frames], errors="raise")[4].compute()
    master = eiger_series(tmp_path, per_file=(2, 1))
    series = stack_module.frame_stack([master])
    np.testing.assert_array_equal(series[1].compute(), read_frame(master, 1).data)
    # a caller's reader (a viewer's cache) reads the frames instead
    asked = []
    own = stack_module.frame_stack([frames], shape=(512, 512), read=lambda ref: asked.append(ref.name) or real(ref))
    np.testing.assert_array_equal(own[1].compute(), read_frame(frames / "f_2.cbf.bz2").data)
    assert asked == ["f_2"] and own.name != stack_module.frame_stack([frames], shape=(512, 512)).name


# ---------------------------------------------------------------------------- CLI
def process(*args) -> int:
    """``braggsim process ARGS`` with the thaumatin cell; SystemExit codes returned."""
    try:
        return main(["process", *[str(a) for a in args], *THAUMATIN])
    except SystemExit as exc:
        return exc.code


def test_cli_runs_the_pipeline_reports_each_frame_and_skips_on_rerun(tmp_path, frames, capsys):
    """The real pipeline, in-process: a lattice crop, a blank crop and a broken file."""
    (frames / "f_9.cbf.bz2").write_bytes((frames / "f_1.cbf.bz2").read_bytes()[:3000])
    out = tmp_path / "o"
    chosen = [frames / "f_1.cbf.bz2", frames / "f_3.cbf.bz2", frames / "f_9.cbf.bz2"]
    assert process(*chosen, "--out", out, "--scheduler", "none") == 1  # one frame failed
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith(f"{frames / 'f_1.cbf.bz2'}: indexed 65/65 spots (100%), RMSD ")
    assert lines[1].startswith(f"{frames / 'f_3.cbf.bz2'}: no-lattice (0 strong spots")
    assert lines[2].startswith("3 frames: 1 indexed, 1 no-lattice, 1 failed; 3 processed in ")
    assert lines[2].endswith(f"wrote {out}/summary.csv")
    assert captured.err.startswith("processing 3 frames on in-process, sequential\n")
    assert f"braggsim: error: {frames / 'f_9.cbf.bz2'}: failed (" in captured.err  # the failure on stderr
    rows = summary(out)
    assert {k: r["status"] for k, r in rows.items()} == {"f_1": "indexed", "f_3": "no-lattice", "f_9": "failed"}
    assert abs(float(rows["f_1"]["a"]) / 57.8 - 1) < 0.005 and abs(float(rows["f_1"]["c"]) / 150.0 - 1) < 0.005
    assert sorted(p.name for p in out.iterdir()) == [
        "f_1.expt",
        "f_1.json",
        "f_3.json",
        "f_9.json",
        "options.json",
        "summary.csv",
    ]
    # the folder now: the three done are skipped, the other four run (f_9 fails again)
    assert process(frames, "--out", out, "--scheduler", "none", "--quiet", "--no-pixel-refine") == 2
    assert "other options (refine_pixels differ)" in capsys.readouterr().err
    assert process(frames, "--out", out, "--scheduler", "none", "--quiet") == 1
    assert capsys.readouterr().out.startswith("7 frames: 4 indexed, 2 no-lattice, 1 failed; 4 processed in ")
    assert len(summary(out)) == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduler", "yarn"], "--scheduler 'yarn' is not local, none or an address"),
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--workers", "2", "--scheduler", "none"], "--workers applies to --scheduler local"),
        (["--max-in-flight", "0"], "--max-in-flight must be >= 1"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, frames, capsys, args, message):
    assert process(frames, "--out", tmp_path / "o", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("braggsim: error: ") and err.count("\n") == 1
    assert message in err


def test_cli_errors_for_missing_frames_and_a_bad_folder(tmp_path, frames, capsys):
    assert process(tmp_path / "nothing*.cbf", "--out", tmp_path / "o") == 2
    assert "no files match" in capsys.readouterr().err
    (tmp_path / "f").write_text("")
    assert process(frames, "--out", tmp_path / "f", "--scheduler", "none") == 2
    assert "is not a folder" in capsys.readouterr().err


def test_cli_cannot_reach_scheduler(tmp_path, frames, capsys, monkeypatch):
    import socket

    monkeypatch.setattr("braggsim.batch.runner.CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert process(frames, "--out", tmp_path / "o", "--scheduler", f"tcp://127.0.0.1:{port}", "--quiet") == 1
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in capsys.readouterr().err


def test_cli_processes_the_images_of_an_eiger_master(tmp_path, capsys):
    """The real pipeline on each image of a multi-image NeXus file, named <stem>_NNNNN."""
    master = eiger_series(tmp_path, per_file=(2, 1))
    out = tmp_path / "out"
    assert process(master, "--out", out, "--scheduler", "none", "--quiet") == 0
    rows = summary(out)
    assert {k: r["status"] for k, r in rows.items()} == {
        "series_master_00000": "indexed",
        "series_master_00001": "indexed",
        "series_master_00002": "no-lattice",
    }
    assert rows["series_master_00001"]["frame"] == f"{master}#1"
    first = json.loads((out / "series_master_00000.json").read_text())
    from_cbf = process_frame(str(CROPS / f"{NAMES[0]}.cbf.bz2"), options())
    assert first["n_spots"] == from_cbf.n_spots and first["n_indexed"] == from_cbf.n_indexed
    expt = json.loads((out / "series_master_00001.expt").read_text())
    imageset = expt["imageset"][0]
    assert imageset["images"] == [str(master)] and imageset["single_file_indices"] == [1]


def test_cli_reports_a_failing_output_folder(tmp_path, frames, capsys, monkeypatch):
    import errno

    def full(result, out_dir):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("braggsim.batch.pipeline._write_frame_outputs", full)
    assert process(frames / "f_3.cbf.bz2", "--out", tmp_path / "o", "--scheduler", "none", "--quiet") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"braggsim: error: writing the results in {tmp_path / 'o'} failed: ") and "No space" in err


def test_cli_help_names_the_schedulers(capsys):
    assert process("--help") == 0
    text = capsys.readouterr().out
    for words in ("--scheduler", "--workers", "--force", "tcp://HOST:PORT", "Eiger master", "130 after Ctrl-C"):
        assert words in text


# ----------------------------------------------------------------------- imports
def test_importing_braggsim_and_the_batch_core_imports_no_dask_and_no_gui():
    code = (
        "import sys\n"
        "import braggsim, braggsim.cli, braggsim.process_cli, braggsim.batch, braggsim.batch.runner\n"
        "import braggsim.batch.task, braggsim.batch.store, braggsim.batch.progress, braggsim.batch.stack\n"
        "import braggsim.batch.results\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'napari', 'qtpy', 'PyQt5'))\n"
        "assert not bad, bad\n"
        "print('CLEAN')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "CLEAN"


# ------------------------------------------------------------------ reading results back
def test_read_summary_gives_numbers_and_predictions_come_from_the_expt(tmp_path, frames):
    from scipy.spatial import cKDTree

    from braggsim.batch import frame_predictions, predicted_spots, read_summary, typed_row
    from braggsim.io.expt import read_expt
    from braggsim.spotfind import find_spots

    out = tmp_path / "out"
    assert read_summary(out) == []
    crops = [frames / "f_1.cbf.bz2", frames / "f_3.cbf.bz2"]  # a lattice and the blank crop
    final = run_batch(crops, options(), out, scheduler="none")
    assert final.counts == {"indexed": 1, "no-lattice": 1}
    rows = read_summary(out)
    assert [r["status"] for r in rows] == ["indexed", "no-lattice"]
    first, blank = rows
    assert first["n_spots"] == 65 and isinstance(first["n_spots"], int)
    assert 0.2 < first["rmsd_px"] < 1.0 and abs(first["a"] - 57.8) < 0.3 and first["mosaic_deg"] > 0
    assert blank["rmsd_px"] is None and blank["a"] is None and blank["n_indexed"] == 0
    assert typed_row({"frame": "x", "rmsd_px": "nan", "n_spots": "7"}) == {"frame": "x", "rmsd_px": None, "n_spots": 7}

    spots = frame_predictions(out, "f_1")
    assert frame_predictions(out, "f_3") is None  # no .expt: not indexed
    experiment = read_expt(out / "f_1.expt")[0]
    assert np.all((spots.px > -0.5) & (spots.px < 511.5))
    # inside the band DIALS' stills predictor uses for the .expt's ML fields, which the
    # pipeline set so that this fraction of the indexed spots has a prediction
    mosaicity = json.loads((out / "f_1.json").read_text())["details"]["stills_mosaicity"]
    frame = read_frame(crops[0], zeros_are_dead=False)
    strong = find_spots(frame.data, frame.mask, options().spotfinder).px
    near = cKDTree(spots.px).query(strong)[0] < 3.0
    assert abs(near.mean() - mosaicity["fraction_predicted"]) < 0.05, (near.mean(), mosaicity)
    assert np.all(
        np.abs(spots.delta_psi_deg)
        <= experiment.half_mosaicity_deg / 2 + np.degrees(spots.d_A / experiment.domain_size_A) + 1e-9
    )
    wider = predicted_spots(experiment, band_deg=1.0)
    assert len(wider) > len(spots) and np.all(np.abs(wider.delta_psi_deg) <= 1.0)
    assert (cKDTree(wider.px).query(strong)[0] < 3.0).mean() > 0.95  # every spot the model explains
    with pytest.raises(ValueError, match="d_min_A"):
        predicted_spots(experiment, d_min_A=0.0)
    experiment.real_space = None
    with pytest.raises(ValueError, match="no crystal"):
        predicted_spots(experiment)
