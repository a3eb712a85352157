"""Every flag nanoBragg.c parses: accepted with its meaning, or refused with a reason.

tests/data/nanobragg_c_flags.txt lists the option strings nanoBragg.c's argument loop
tests for.  Each must be in braggsim's flag table or its refused list; at most three may
be refused; --help lists them all; every accepted flag changes the result (the model, an
output or a printed note); contradictory flags follow nanoBragg (the last one wins);
integers are read as C's atoi reads them; non-finite numbers are refused.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from braggsim import cli
from braggsim.io import write_smv
from braggsim.nanobragg_flags import FLAGS, REFUSED, SUPPORTED_FLAGS, parse_flags
from tests.conftest import DATA, ROOT

DOCS = ROOT / "docs"
C_FLAGS = [line.strip() for line in (DATA / "nanobragg_c_flags.txt").read_text().splitlines() if line.startswith("-")]
BASE = ["-cell", "100", "100", "100", "90", "90", "90", "-default_F", "100", "-N", "5", "-detpixels", "32"]


def test_the_list_of_nanobragg_flags_is_complete_and_distinct():
    assert len(C_FLAGS) == len(set(C_FLAGS)) == 145
    assert C_FLAGS[:6] == ["-img", "-mask", "-Na", "-Nb", "-Nc", "-N"] and C_FLAGS[-1] == "-water"


def test_every_nanobragg_flag_is_accepted_or_refused_with_a_reason():
    unknown = [f for f in C_FLAGS if f not in FLAGS and f not in REFUSED]
    assert unknown == []
    refused = [f for f in C_FLAGS if f in REFUSED]
    assert refused == ["-coherent"]  # at most 3 of nanoBragg.c's flags may be refused
    for flag in refused:
        assert len(REFUSED[flag]) > 20  # a reason, not a placeholder


@pytest.mark.parametrize("flag", sorted(REFUSED))
def test_a_refused_flag_is_one_line_naming_it_and_the_reason(flag, capsys):
    status = cli.main(["simulate", *BASE, flag, "1"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and flag in err and REFUSED[flag][:30] in err


def test_help_lists_every_accepted_and_refused_flag(capsys):
    assert cli.main(["simulate", "--help"]) == 0
    out = capsys.readouterr().out
    missing = [f for f in (*SUPPORTED_FLAGS, *REFUSED) if not re.search(re.escape(f) + r"(?![\w])", out)]
    assert missing == []
    for reason in REFUSED.values():
        assert reason in out


def test_physics_doc_lists_every_flag():
    text = (DOCS / "physics.md").read_text()
    missing = [f for f in (*SUPPORTED_FLAGS, *REFUSED) if not re.search("`" + re.escape(f) + r"[` ]", text)]
    assert missing == []


# ------------------------------------------------------------- last one wins
@pytest.mark.parametrize(
    "flags,check",
    [
        (["-mosflm", "-xds"], lambda f: f.detector.convention == "xds"),
        (["-xds", "-mosflm"], lambda f: f.detector.convention == "mosflm"),
        (["-gauss_xtal", "-round_xtal"], lambda f: f.crystal.shape == "round"),
        (["-round_xtal", "-gauss_xtal"], lambda f: f.crystal.shape == "gauss"),
        (["-energy", "12000", "-lambda", "1.5"], lambda f: f.beam.wavelength_A == 1.5),
        (["-lambda", "1.5", "-energy", "12000"], lambda f: math.isclose(f.beam.wavelength_A, 12398.42 / 12000)),
        (["-nointerpolate", "-interpolate"], lambda f: f.crystal.interpolate is True),
        (["-interpolate", "-nointerpolate"], lambda f: f.crystal.interpolate is False),
        (["-polar", "0.5", "-nopolar"], lambda f: f.beam.nopolar),
        (["-nopolar", "-polar", "0.5"], lambda f: not f.beam.nopolar and f.beam.polarization == 0.5),
        (["-divergence", "1", "-divsteps", "4", "-round_div", "-square_div"], lambda f: f.beam.n_sources == 16),
        (["-divergence", "1", "-divsteps", "4", "-square_div", "-round_div"], lambda f: f.beam.n_sources == 12),
        (["-progress", "-noprogress"], lambda f: not f.progress),
        (["-pgmfile", "x.pgm", "-nopgm"], lambda f: f.pgmfile is None),
        (["-nopgm", "-pgmfile", "x.pgm"], lambda f: f.pgmfile == "x.pgm"),
        (["-N", "3", "-Na", "7"], lambda f: tuple(f.crystal.N_cells) == (7, 3, 3)),
        (["-Na", "7", "-N", "3"], lambda f: tuple(f.crystal.N_cells) == (3, 3, 3)),
        (["-detpixels", "40", "-detpixels_f", "20"], lambda f: f.detector.shape == (40, 20)),
        (["-distance", "90", "-distance", "120"], lambda f: f.detector.distance_mm == 120),
    ],
)
def test_the_last_of_contradictory_flags_wins(flags, check):
    assert check(parse_flags(BASE + flags))


# -------------------------------------------------------------- number parsing
@pytest.mark.parametrize(
    "flags,expected",
    [
        (["-N", "2.5"], ("N_cells", (2, 2, 2))),
        (["-N", "5.99"], ("N_cells", (5, 5, 5))),
        (["-mosaic", "1", "-mosaic_dom", "3.7"], ("n_domains", 3)),
        (["-mosaic", "1", "-mosaic_seed", "1e3"], ("mosaic_seed", 1)),  # atoi("1e3") is 1
    ],
)
def test_integers_are_read_as_atoi_reads_them(flags, expected):
    result = parse_flags(BASE + flags)
    name, value = expected
    got = getattr(result.crystal, name)
    assert (tuple(got) if isinstance(got, tuple) else got) == value
    assert any("atoi" in note for note in result.notes)


@pytest.mark.parametrize(
    "flags,named",
    [
        (["-detpixels", "inf"], "-detpixels"),
        (["-mosaic_seed", "inf"], "-mosaic_seed"),
        (["-oversample", "inf"], "-oversample"),
        (["-N", "nan"], "-N"),
        (["-N", "abc"], "-N"),
        (["-distance", "inf"], "-distance"),
        (["-lambda", "nan"], "-lambda"),
        (["-divergence", "inf"], "-divergence"),
        (["-detector_thick", "inf"], "-detector_thick"),
        (["-water", "nan"], "-water"),
    ],
)
def test_non_finite_and_garbled_numbers_are_refused_in_one_line(flags, named, tmp_path, capsys):
    out = tmp_path / "never.bin"
    status = cli.main(["simulate", *BASE, *flags, "-floatfile", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and named in err and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------- every accepted flag has an effect
def _files(tmp: Path) -> dict:
    hkl = tmp / "f.hkl"
    hkl.write_text("0 0 1 10\n1 0 0 20\n0 1 0 30\n")
    mat = tmp / "a.mat"
    mat.write_text("0.01 0 0\n0 0.01 0\n0 0 0.01\n")
    sources = tmp / "s.txt"
    sources.write_text("-10 0 0.001 1 1e-10\n-10 0.001 0 1 1e-10\n")
    stol = tmp / "m.stol"
    stol.write_text("0 3\n0.2 2\n0.5 1\n")
    smv = tmp / "h.img"
    image = np.ones((32, 32))
    image[:4] = 0
    from braggsim import Beam, Detector

    write_smv(smv, image, detector=Detector(fpixels=32, pixel_size_mm=0.2, distance_mm=80), beam=Beam(wavelength_A=1.2))
    return {"hkl": str(hkl), "mat": str(mat), "src": str(sources), "stol": str(stol), "smv": str(smv)}


# flag -> (what the baseline adds, the flag and its values); {name} is a file from _files
EXAMPLES = {
    "-cell": ([], ["-cell", "90"]),
    "-mat": ([], ["-mat", "{mat}"]),
    "-hkl": ([], ["-hkl", "{hkl}"]),
    "-default_F": ([], ["-default_F", "7"]),
    "-dump": (["-hkl", "{hkl}"], ["-dump", "{tmp}/F.bin"]),
    "-N": ([], ["-N", "3"]),
    "-Na": ([], ["-Na", "3"]),
    "-Nb": ([], ["-Nb", "3"]),
    "-Nc": ([], ["-Nc", "3"]),
    "-misset": ([], ["-misset", "1", "2", "3"]),
    "-misset_seed": (["-misset", "random", "-misset_seed", "1"], ["-misset_seed", "2"]),
    "-mosaic": ([], ["-mosaic", "1"]),
    "-mosaic_dom": (["-mosaic", "1"], ["-mosaic_dom", "3"]),
    "-mosaic_seed": (["-mosaic", "1"], ["-mosaic_seed", "3"]),
    "-square_xtal": (["-round_xtal"], ["-square_xtal"]),
    "-round_xtal": ([], ["-round_xtal"]),
    "-gauss_xtal": ([], ["-gauss_xtal"]),
    "-tophat_spots": ([], ["-tophat_spots"]),
    "-fudge": ([], ["-fudge", "2"]),
    "-interpolate": ([], ["-interpolate"]),
    "-nointerpolate": (["-N", "2"], ["-nointerpolate"]),
    "-phi": ([], ["-phi", "3"]),
    "-osc": ([], ["-osc", "1"]),
    "-phistep": ([], ["-phistep", "0.5"]),
    "-phisteps": ([], ["-phisteps", "3"]),
    "-spindle_axis": ([], ["-spindle_axis", "0", "1", "0"]),
    "-lambda": ([], ["-lambda", "1.2"]),
    "-energy": ([], ["-energy", "9000"]),
    "-fluence": ([], ["-fluence", "1e24"]),
    "-flux": ([], ["-flux", "1e12"]),
    "-exposure": (["-flux", "1e12"], ["-exposure", "0.5"]),
    "-beamsize": (["-flux", "1e12"], ["-beamsize", "0.05"]),
    "-polar": ([], ["-polar", "0.9"]),
    "-nopolar": ([], ["-nopolar"]),
    "-divergence": ([], ["-divergence", "1"]),
    "-hdivrange": ([], ["-hdivrange", "1"]),
    "-vdivrange": ([], ["-vdivrange", "1"]),
    "-hdivstep": ([], ["-hdivstep", "0.5"]),
    "-vdivstep": ([], ["-vdivstep", "0.5"]),
    "-hdivsteps": (["-hdivrange", "1"], ["-hdivsteps", "3"]),
    "-vdivsteps": (["-vdivrange", "1"], ["-vdivsteps", "3"]),
    "-divsteps": (["-divergence", "1"], ["-divsteps", "3"]),
    "-round_div": (["-divergence", "1", "-divsteps", "4", "-square_div"], ["-round_div"]),
    "-square_div": (["-divergence", "1", "-divsteps", "4"], ["-square_div"]),
    "-dispersion": ([], ["-dispersion", "1"]),
    "-dispsteps": (["-dispersion", "1"], ["-dispsteps", "3"]),
    "-sourcefile": ([], ["-sourcefile", "{src}"]),
    "-beam_vector": ([], ["-beam_vector", "1", "0.01", "0"]),
    "-polar_vector": ([], ["-polar_vector", "0", "1", "0"]),
    "-distance": ([], ["-distance", "90"]),
    "-close_distance": ([], ["-close_distance", "90"]),
    "-pixel": ([], ["-pixel", "0.2"]),
    "-detpixels": ([], ["-detpixels", "20"]),
    "-detpixels_f": ([], ["-detpixels_f", "20"]),
    "-detpixels_s": ([], ["-detpixels_s", "20"]),
    "-detsize": (None, ["-detsize", "2"]),
    "-detsize_f": (None, ["-detsize_f", "2"]),
    "-detsize_s": (None, ["-detsize_s", "2"]),
    "-Xbeam": ([], ["-Xbeam", "1"]),
    "-Ybeam": ([], ["-Ybeam", "1"]),
    "-Xclose": (["-xds"], ["-Xclose", "1"]),
    "-Yclose": (["-xds"], ["-Yclose", "1"]),
    "-ORGX": (["-xds"], ["-ORGX", "10"]),
    "-ORGY": (["-xds"], ["-ORGY", "10"]),
    "-pivot": (["-twotheta", "5"], ["-pivot", "sample"]),
    "-mosflm": (["-xds"], ["-mosflm"]),
    "-xds": ([], ["-xds"]),
    "-adxv": ([], ["-adxv"]),
    "-denzo": ([], ["-denzo"]),
    "-dials": ([], ["-dials"]),
    "-fdet_vector": ([], ["-fdet_vector", "0", "0.1", "1"]),
    "-sdet_vector": ([], ["-sdet_vector", "0", "-1", "0.1"]),
    "-odet_vector": (["-fdet_vector", "0", "0", "1"], ["-odet_vector", "1", "0.1", "0"]),
    "-twotheta_axis": ([], ["-twotheta_axis", "0", "0", "1"]),
    "-pix0_vector": (["-fdet_vector", "0", "0", "1"], ["-pix0_vector", "0.1", "0", "0"]),
    "-twotheta": ([], ["-twotheta", "5"]),
    "-detector_rotx": ([], ["-detector_rotx", "5"]),
    "-detector_roty": ([], ["-detector_roty", "5"]),
    "-detector_rotz": ([], ["-detector_rotz", "5"]),
    "-curved_det": ([], ["-curved_det"]),
    "-point_pixel": ([], ["-point_pixel"]),
    "-oversample": ([], ["-oversample", "3"]),
    "-oversample_omega": ([], ["-oversample_omega"]),
    "-oversample_polar": ([], ["-oversample_polar"]),
    "-roi": ([], ["-roi", "1", "10", "2", "20"]),
    "-mask": ([], ["-mask", "{smv}"]),
    "-img": ([], ["-img", "{smv}"]),
    "-dmin": ([], ["-dmin", "3"]),
    "-detector_thick": ([], ["-detector_thick", "300"]),
    "-detector_abs": (["-detector_thick", "300"], ["-detector_abs", "100"]),
    "-detector_thicksteps": (["-detector_thick", "300"], ["-detector_thicksteps", "4"]),
    "-oversample_thick": (["-detector_thick", "300"], ["-oversample_thick"]),
    "-water": ([], ["-water", "10"]),
    "-stol": (["-water", "10"], ["-stol", "{stol}"]),
    "-4stol": (["-water", "10"], ["-4stol", "{stol}"]),
    "-Q": (["-water", "10"], ["-Q", "{stol}"]),
    "-density": (["-water", "10"], ["-density", "0.9"]),
    "-MW": (["-water", "10"], ["-MW", "20"]),
    "-floatfile": ([], ["-floatfile", "{tmp}/a.bin"]),
    "-intfile": ([], ["-intfile", "{tmp}/a.img"]),
    "-pgmfile": ([], ["-pgmfile", "{tmp}/a.pgm"]),
    "-stolout": ([], ["-stolout", "{tmp}/a.txt"]),
    "-scale": ([], ["-scale", "2"]),
    "-pgmscale": (["-pgmfile", "{tmp}/a.pgm"], ["-pgmscale", "2"]),
    "-nopgm": (["-pgmfile", "{tmp}/a.pgm"], ["-nopgm"]),
    "-adc": ([], ["-adc", "10"]),
    "-printout": ([], ["-printout"]),
    "-printout_pixel": ([], ["-printout_pixel", "1", "2"]),
    "-progress": ([], ["-progress"]),
    "-noisefile": ([], ["-noisefile", "{tmp}/n.img"]),
    "-nonoise": (["-noisefile", "{tmp}/n.img"], ["-nonoise"]),
    "-seed": (["-noisefile", "{tmp}/n.img"], ["-seed", "5"]),
    "-noprogress": (["-progress"], ["-noprogress"]),
    "-dtype": ([], ["-dtype", "float64"]),
    "-device": ([], ["-device", "cpu:0"]),
}
# a size of one crystal axis (mm) that changes N from 5
SIZE = ["0.0003"]


def _example(flag: str):
    spec = FLAGS[flag]
    if flag in EXAMPLES:
        return EXAMPLES[flag]
    for name in spec.names:  # an alias shares its canonical flag's example
        if name in EXAMPLES:
            base, args = EXAMPLES[name]
            return base, [flag, *args[1:]]
    if spec.values == 1 and spec.group == "crystal":  # the crystal-size family
        return [], [flag, *SIZE]
    if spec.values == 0:  # a switch whose aliases are listed above
        raise KeyError(flag)
    raise KeyError(flag)


def _fingerprint(result) -> str:
    outputs = (
        result.floatfile,
        result.intfile,
        result.intfile_scale,
        result.pgmfile,
        result.pgm_scale,
        result.adc_offset,
        result.printout,
        result.printout_pixel,
        result.stolout,
        result.progress,
        result.dump_write,
        result.calculate_noise,
        result.noisefile,
        result.seed,
        result.dtype,
        result.device,
    )
    mask = None if result.detector.pixel_mask is None else result.detector.pixel_mask.tobytes()
    return repr((result.crystal, result.detector, result.beam, result.background, outputs, result.notes, mask))


@pytest.mark.parametrize("flag", sorted(SUPPORTED_FLAGS))
def test_every_accepted_flag_has_an_effect(flag, tmp_path):
    files = {**_files(tmp_path), "tmp": str(tmp_path)}
    extra, args = _example(flag)
    base = BASE
    if extra is None:  # detector sizes: no pixel count in the baseline
        base, extra = BASE[: BASE.index("-detpixels")], []
    fill = lambda items: [a.format(**files) for a in items]  # noqa: E731
    before = parse_flags(base + fill(extra))
    after = parse_flags(base + fill(extra) + fill(args))
    assert _fingerprint(before) != _fingerprint(after)


def test_nonoise_cancels_a_noise_request():
    assert parse_flags(BASE + ["-noisefile", "x.img"]).noisefile == "x.img"
    assert parse_flags(BASE + ["-noisefile", "x.img", "-nonoise"]).noisefile is None
    assert parse_flags(BASE + ["-nonoise", "-noisefile", "x.img"]).noisefile == "x.img"


def test_physics_doc_carries_the_current_flag_table():
    from braggsim.nanobragg_flags import help_markdown

    assert help_markdown() in (DOCS / "physics.md").read_text()
