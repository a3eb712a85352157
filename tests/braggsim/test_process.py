"""braggsim process: the per-frame pipeline, its results and files, on real stills (no Qt)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from braggsim.cli import main
from braggsim.process import FrameResult, ProcessOptions, frame_stem, process_frame, write_frame_outputs, write_summary
from tests.conftest import DATA, SHARED_DATA, needs_shared

SHARED = SHARED_DATA / "thaumatin_grid"
THAUMATIN = ["57.8", "57.8", "150", "90", "90", "90"]
needs_frames = needs_shared("data", "thaumatin_grid")


def options(**changes):
    return ProcessOptions(cell=(57.8, 57.8, 150.0, 90, 90, 90), space_group="P41212", **changes)


def test_options_travel_as_json():
    first = options(beamstop=12.5, refine_pixels=False, pixel_refine={"max_reflections": 50})
    payload = json.dumps(first.to_dict())
    second = ProcessOptions.from_dict(json.loads(payload))
    assert second == first
    assert second.space_group == "P 41 21 2"
    assert second.indexing.spot_refine.refine_detector == first.indexing.spot_refine.refine_detector


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"cell": (57.8, 57.8, 0, 90, 90, 90)}, "cell edges"),
        ({"space_group": "Q 9"}, "unknown space group"),
        ({"beamstop": -3}, "beamstop"),
    ],
)
def test_bad_options_are_value_errors(changes, message):
    values = {"cell": (57.8, 57.8, 150.0, 90, 90, 90), "space_group": "P41212", **changes}
    with pytest.raises(ValueError, match=message):
        ProcessOptions(**values)


def test_a_broken_or_missing_frame_is_failed_never_raised(tmp_path):
    broken = tmp_path / "broken.cbf"
    broken.write_bytes(b"###CBF: VERSION 1.5\nnot really\n")
    for source in (broken, tmp_path / "missing.cbf", (broken, 3), ("a", "b", "c")):
        result = process_frame(source, options())
        assert result.status == "failed" and result.reason
        assert result.expt is None
        json.dumps(result.to_json_dict())


def test_stems_and_summary_rows(tmp_path):
    assert frame_stem("/x/thau_3_2_0003.cbf.bz2") == "thau_3_2_0003"
    assert frame_stem("/x/data.h5#7") == "data_00007"
    result = FrameResult(frame="/x/a.cbf", status="no-lattice", reason="3 strong spots", n_spots=3, time_s=1.234)
    written = write_frame_outputs(result, tmp_path)
    assert [Path(p).name for p in written] == ["a.json"]  # no .expt without a lattice
    path = write_summary(tmp_path, [result.summary_row()])
    rows = list(csv.DictReader(Path(path).read_text().splitlines()))
    assert rows == [
        {
            "frame": "/x/a.cbf",
            "status": "no-lattice",
            "n_spots": "3",
            "n_indexed": "0",
            "rmsd_px": "",
            "a": "",
            "b": "",
            "c": "",
            "alpha": "",
            "beta": "",
            "gamma": "",
            "mosaic_deg": "",
            "time_s": "1.23",
        }
    ]


@needs_frames
def test_cli_processes_a_lattice_a_blank_and_a_broken_frame(tmp_path, capsys):
    broken = tmp_path / "thau_broken.cbf"
    broken.write_bytes((SHARED / "thau_3_2_0013.cbf.bz2").read_bytes()[:5000])
    frames = [str(SHARED / "thau_3_2_0013.cbf.bz2"), str(SHARED / "thau_3_2_0016.cbf.bz2"), str(broken)]
    out = tmp_path / "out"
    status = main(["process", *frames, "--cell", *THAUMATIN, "--space-group", "P 41 21 2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 1  # one frame failed; the others went on
    assert "1 indexed, 1 no-lattice, 1 failed" in printed
    rows = {Path(r["frame"]).name: r for r in csv.DictReader((out / "summary.csv").read_text().splitlines())}
    assert rows["thau_3_2_0013.cbf.bz2"]["status"] == "indexed"
    assert rows["thau_3_2_0016.cbf.bz2"]["status"] == "no-lattice"
    assert rows["thau_broken.cbf"]["status"] == "failed"
    assert sorted(p.name for p in out.iterdir()) == [
        "options.json",  # the options of the results, so a rerun with others is refused
        "summary.csv",
        "thau_3_2_0013.expt",
        "thau_3_2_0013.json",
        "thau_3_2_0016.json",
        "thau_broken.json",
    ]
    report = json.loads((out / "thau_3_2_0013.json").read_text())
    assert report["n_spots"] > 500 and report["n_indexed"] / report["n_spots"] > 0.85
    assert set(report["times_s"]) == {"read", "spots", "index", "refine"}
    assert report["cell_sigma"][0] > 0 and report["mosaic_deg"] > 0
    assert report["parameters"]["mosaic_spread_deg"]["sigma"] > 0
    assert json.loads((out / "thau_broken.json").read_text())["reason"]
    # judge the .expt as an outsider would: the observed spots' fractional indices under its
    # crystal and geometry (plain numpy, DIALS conventions), and its cell
    expt = json.loads((out / "thau_3_2_0013.expt").read_text())
    spots = np.loadtxt(DATA / "thau_0013_spots.csv", delimiter=",")[:, :2]
    panel, beam, crystal = expt["detector"][0]["panels"][0], expt["beam"][0], expt["crystal"][0]
    lab = (
        np.array(panel["origin"])
        + np.outer((spots[:, 1] + 0.5) * panel["pixel_size"][0], panel["fast_axis"])
        + np.outer((spots[:, 0] + 0.5) * panel["pixel_size"][1], panel["slow_axis"])
    )
    s0 = -np.array(beam["direction"]) / beam["wavelength"]
    q = lab / np.linalg.norm(lab, axis=1)[:, None] / beam["wavelength"] - s0
    real = np.array([crystal[f"real_space_{k}"] for k in "abc"])
    hkl = q @ real.T
    assert np.mean(np.all(np.abs(hkl - np.rint(hkl)) <= 0.3, axis=1)) > 0.85
    lengths = np.linalg.norm(real, axis=1)
    assert abs(lengths[0] / 57.8 - 1) < 0.005 and abs(lengths[2] / 150.0 - 1) < 0.005
    assert crystal["space_group_hall_symbol"].strip() == "P 4abw 2nw"
    # DIALS' stills predictor predicts a reflection only when its DeltaPsi (the relp's polar
    # angle to the beam against the one the sphere needs) is under d / D + half / 2: the
    # .expt's ML fields must leave nearly every indexed spot with a prediction
    indexed = np.all(np.abs(hkl - np.rint(hkl)) <= 0.3, axis=1)
    relp = np.rint(hkl[indexed]) @ np.linalg.inv(real).T
    length = np.linalg.norm(relp, axis=1)
    k = 1 / beam["wavelength"]
    polar = np.arccos(np.clip(relp @ s0 / (length * k), -1, 1))
    delta_psi = np.abs(polar - np.arccos(-length / (2 * k)))
    band = 1 / length / crystal["ML_domain_size_ang"] + np.radians(crystal["ML_half_mosaicity_deg"]) / 2
    assert np.mean(delta_psi < band) > 0.9


@pytest.mark.parametrize(
    "args, message",
    [
        (["x.cbf", "--space-group", "P1", "--out", "o"], "--cell"),
        (["x.cbf", "--cell", *THAUMATIN, "--space-group", "Q 7", "--out", "o"], "unknown space group"),
        (["x.cbf", "--cell", *THAUMATIN, "--space-group", "P1", "--out", "o", "--gain", "0"], "--gain"),
    ],
)
def test_cli_bad_arguments_are_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["process", *args])
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("braggsim: error:") and message in err[0]


def test_cli_help_describes_the_outputs(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["process", "--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    for word in ("summary.csv", "<stem>.expt", "no-lattice", "--space-group"):
        assert word in text
