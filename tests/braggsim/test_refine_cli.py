"""braggsim refine -expt: a refinement that starts from a DIALS ExperimentList (no Qt)."""

import json

import numpy as np
import torch

from braggsim.demo import demo_model
from braggsim.io import write_float
from braggsim.io.expt import from_braggsim, read_expt, write_expt
from braggsim.refine_cli import refine_main
from braggsim.simulate import simulate


def test_refine_starts_from_an_expt_and_recovers_the_misset(tmp_path, capsys):
    truth_crystal, detector, beam = demo_model(misset_deg=(5.0, 3.0, -2.0), mosaic_spread_deg=0.8)
    with torch.no_grad():
        image = simulate(truth_crystal, detector, beam, dtype=torch.float64).numpy()
    frame = tmp_path / "frame.bin"
    write_float(frame, image.astype(np.float32), sidecar=True, detector=detector, beam=beam)
    start_crystal, _, _ = demo_model(misset_deg=(4.0, 3.5, -1.5), mosaic_spread_deg=0.8)
    model = tmp_path / "start.expt"
    write_expt(model, from_braggsim(start_crystal, detector, beam, space_group_hall="P 2 2"))
    out = tmp_path / "refined.json"
    status = refine_main(
        [
            "-data", str(frame), "-expt", str(model), "-refine", "misset",
            "-N", "5", "-default_F", "100", "-mosaic", "0.8", "-mosaic_dom", "5", "-mosaic_seed", "42",
            "-fluence", "1e28", "-iterations", "60", "-json", str(out),
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "from the frame's header" not in printed  # the .expt gives the geometry
    refined = json.loads(out.read_text())["parameters"]
    # the .expt's crystal becomes cell + misset in braggsim's frame: the truth's misset
    np.testing.assert_allclose(
        [refined["misset_x_deg"], refined["misset_y_deg"], refined["misset_z_deg"]], [5.0, 3.0, -2.0], atol=0.05
    )
    (experiment,) = read_expt(model)
    assert experiment.space_group_hall == "P 2 2"


def test_refine_with_a_bad_expt_is_one_line_exit_2(tmp_path, capsys):
    model = tmp_path / "bad.expt"
    model.write_text("{}")
    status = refine_main(["-data", str(tmp_path / "x.bin"), "-expt", str(model), "-refine", "misset"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "not a DIALS ExperimentList" in err[0]
