"""The Simulate dock's realistic-frame sections: beam divergence and bandwidth, sensor,
background (water, air) and noise, collapsed by default; what they put in the image."""

import numpy as np
import pytest
import torch

import braggsim
from braggsim.noise import DetectorModel, noisify
from napari_braggsim._fields import COLLAPSED_SECTIONS
from napari_braggsim._model import DEFAULTS, build_model
from napari_braggsim._widgets.simulate import LIVE_DEBOUNCE_MS

from .conftest import dock, wait_idle

LIVE_WAIT_MS = 2 * LIVE_DEBOUNCE_MS


def _simulate_widget(viewer):
    widget = dock(viewer, "Simulate")
    widget.overlays.value = False  # the image is what these tests look at
    return widget


def _run(qtbot, widget, **fields):
    for name, value in fields.items():
        widget.fields[name].value = value
    assert widget.run() is not None
    wait_idle(qtbot, widget)
    return widget.viewer.layers["simulated"].data.copy()


def _spots(crystal, detector, beam) -> np.ndarray:
    with torch.no_grad():
        return braggsim.simulate(crystal, detector, beam).numpy()


def test_the_scene_sections_start_collapsed_and_open_on_a_click(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    widget = dock(viewer, "Simulate")
    # crystal, detector and beam are open
    qtbot.waitUntil(lambda: widget.fields["cell_a_A"].native.isVisible(), timeout=5000)
    assert list(COLLAPSED_SECTIONS) == [
        "Beam divergence and bandwidth",
        "Sensor",
        "Background (water, air)",
        "Noise",
    ]
    for title in COLLAPSED_SECTIONS:
        section = widget.sections[title]
        assert not section.expanded and section.body.native.isHidden(), title
        assert not widget.fields[section.body[0].name].native.isVisible()
    noise = widget.sections["Noise"]
    noise.header.click()
    qtbot.waitUntil(lambda: widget.fields["noise_seed"].native.isVisible(), timeout=5000)
    assert noise.expanded and noise.header.text() == "Noise"
    noise.header.click()
    assert not noise.expanded and noise.body.native.isHidden()


def test_divergence_and_bandwidth_give_the_apis_image(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _simulate_widget(viewer)
    plain = _run(qtbot, widget)
    image = _run(
        qtbot,
        widget,
        divergence_h_mrad=2.0,
        divergence_v_mrad=1.0,
        divergence_steps=3,
        dispersion_pct=0.5,
        dispersion_steps=3,
    )
    crystal, detector, beam = build_model(DEFAULTS)
    sources = beam.replace(divergence_mrad=(2.0, 1.0), divergence_steps=(3, 3), dispersion_pct=0.5, dispersion_steps=3)
    assert sources.n_sources == 15  # 3x3 directions less the 4 corners outside the ellipse, 3 wavelengths
    expected = _spots(crystal, detector, sources)
    np.testing.assert_allclose(image, expected, rtol=1e-6, atol=1e-9)
    assert image.sum() == pytest.approx(float(expected.sum()), rel=1e-6)
    assert np.abs(image - plain).max() > 0.1 * plain.max()  # broader, weaker spots
    assert "15 sources" in widget.status.value
    assert widget.state.values["dispersion_pct"] == 0.5  # the shared model holds them
    assert viewer.layers["simulated"].metadata["braggsim_model"]["divergence_h_mrad"] == 2.0


def test_water_adds_nonbraggs_mean_level(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _simulate_widget(viewer)
    plain = _run(qtbot, widget)
    wet = _run(qtbot, widget, water_um=1.0)
    crystal, detector, beam = build_model(DEFAULTS)
    cube = braggsim.AmorphousBackground("water", thickness_mm=0.001, width_mm=0.001, height_mm=0.001)
    with torch.no_grad():
        level = braggsim.simulate_background(detector, beam, cube).numpy()
    assert float((wet - plain).mean()) == pytest.approx(float(level.mean()), rel=1e-5)
    # photons/pixel: at the demo's fluence (1e28 photons/m^2) 1 um of water outshines the spots ~2000x
    assert float(level.mean()) == pytest.approx(1.7575e4, rel=1e-4) and plain.max() < 10
    assert "background 1.76e+04 photons/px" in widget.status.value
    dry = _run(qtbot, widget, water_um=0.0, air_mm=1.0, beam_size_mm=0.001)
    path = braggsim.AmorphousBackground(
        "air", thickness_mm=1.0, width_mm=0.001, height_mm=0.001, density_g_cm3=0.0012, molecular_weight=29.0
    )
    with torch.no_grad():
        air = braggsim.simulate_background(detector, beam, path).numpy()
    assert float((dry - plain).mean()) == pytest.approx(float(air.mean()), rel=1e-5)


def test_noise_repeats_with_its_seed_and_is_noisifys(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _simulate_widget(viewer)
    photons = _run(qtbot, widget)
    first = _run(qtbot, widget, noise_on=True, noise_seed=1, readout_noise_adu=2.0, psf="fiber", psf_fwhm_um=60.0)
    assert "showing the noisy image (seed 1, readout 2 ADU, fiber PSF 60 µm)" in widget.status.value
    again = _run(qtbot, widget)
    np.testing.assert_array_equal(first, again)  # same seed, same image
    other = _run(qtbot, widget, noise_seed=2)
    assert np.count_nonzero(other != first) > 1000
    model = DetectorModel(readout_noise_adu=2.0, psf="fiber", psf_fwhm_um=60.0)
    expected = noisify(photons, pixel_size_mm=0.1, seed=1, model=model).counts
    np.testing.assert_array_equal(first, expected.astype(np.float32))
    assert first.min() >= 0 and np.array_equal(first, np.round(first))  # whole ADU
    off = _run(qtbot, widget, noise_on=False)
    np.testing.assert_array_equal(off, photons)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"divergence_steps": 0}, "divergence steps must be at least 1 (-divsteps), got 0"),
        (
            {"sensor_on": True, "sensor_thickness_um": 0.0},
            "sensor thickness must be above 0 µm with the thick sensor on (-detector_thick)",
        ),
        (
            {"noise_on": True, "psf": "gauss", "psf_fwhm_um": 0.0},
            "PSF FWHM must be above 0 µm with a gauss PSF (noisify -psf_fwhm)",
        ),
    ],
)
def test_a_bad_value_is_a_notification_and_the_image_stays(make_napari_viewer, qtbot, errors, fields, message):
    viewer = make_napari_viewer()
    widget = _simulate_widget(viewer)
    good = _run(qtbot, widget, water_um=0.5)
    status = widget.status.value
    for name, value in fields.items():
        widget.fields[name].value = value
    assert widget.fields[name].value == value  # the field takes it; Run refuses it
    assert widget.run() is None and not widget.busy
    assert len(errors) == 1 and errors[0].startswith(f"Simulate: {message}")
    np.testing.assert_array_equal(viewer.layers["simulated"].data, good)
    assert widget.status.value == status
    # negative values never get that far: the fields' ranges refuse them
    widget.fields["water_um"].value = 0.0
    widget.fields["water_um"].native.setValue(-3.0)
    assert widget.fields["water_um"].value == 0.0


def test_a_bad_value_in_live_mode_keeps_the_last_image(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    widget = _simulate_widget(viewer)
    widget.live.value = True
    qtbot.waitUntil(lambda: "simulated" in viewer.layers, timeout=20000)
    wait_idle(qtbot, widget)
    good = viewer.layers["simulated"].data.copy()
    widget.fields["sensor_layers"].value = 0  # unused while the sensor is off: fine
    qtbot.wait(LIVE_WAIT_MS)
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["simulated"].data, good)
    widget.fields["sensor_on"].value = True
    qtbot.waitUntil(lambda: len(errors) >= 1, timeout=20000)
    wait_idle(qtbot, widget)
    assert "sensor layers must be at least 1 with the thick sensor on (-detector_thicksteps)" in errors[-1]
    np.testing.assert_array_equal(viewer.layers["simulated"].data, good)


def test_a_newer_run_cancels_the_older_one(make_napari_viewer, qtbot, errors):
    from napari_braggsim._render import Cancelled

    viewer = make_napari_viewer()
    widget = _simulate_widget(viewer)
    widget.set_values({"fpixels": 256, "spixels": 256, "divergence_h_mrad": 1.0, "dispersion_pct": 0.3})
    older = widget.run()
    widget.fields["misset_z_deg"].value = 12.0
    newer = widget.run()
    wait_idle(qtbot, widget)
    assert older.wait(30) and isinstance(older._error, Cancelled)  # stopped at a block of rows
    assert newer._error is None and errors == []  # a cancelled run is no failure
    crystal, detector, beam = build_model(widget.state.values)
    np.testing.assert_allclose(viewer.layers["simulated"].data, _spots(crystal, detector, beam), rtol=1e-6, atol=1e-9)
