"""The frame the Simulate widget shows, from a value dict: spots, background, then noise.

``render(values)`` builds the model (``_model``: crystal, detector, and a beam with its
divergence and bandwidth; the sensor in the detector), simulates the spots, adds the
amorphous background of each material (water, air) and, with the noise on, turns the
photons into noisify's detector counts.  It runs in the widget's background job; no Qt
here, so a script or a test gets the same frame.

* the spots: ``braggsim.simulate`` (the fused kernel where it applies);
* each material: ``braggsim.simulate_background`` on the same detector and beam
  sources, as ``braggsim nonbragg`` renders it (one sample per pixel, nonBragg's default:
  the background is smooth, and this keeps a 1024x1024 frame a few times faster than
  oversampling it with the spots);
* the noise: ``braggsim.noise.noisify``, pixel-identical to noisify with the same seed
  (its calibration error uses noisify's built-in calibration seed, so it is the same
  pattern on every frame, as on a real detector).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ._model import build_backgrounds, build_model, build_noise, check_scene


class Cancelled(Exception):
    """``render`` stopped because its ``cancelled()`` said so (a newer request came)."""


@dataclasses.dataclass
class Rendered:
    """One frame.

    image: what the ``simulated`` layer shows, (slow, fast) float32: detector counts in
        ADU with the noise on, else photons/pixel;
    photons: the noiseless photons/pixel (spots plus background), (slow, fast) float32;
    background_mean: the mean photons/pixel the background added (0 without one);
    noise: noisify's ``NoisifyResult`` (seed, overloads ...) or None with the noise off;
    model: the (Crystal, Detector, Beam) simulated; values: the checked value dict.
    """

    image: np.ndarray
    photons: np.ndarray
    background_mean: float
    noise: Any
    model: tuple
    values: dict

    @property
    def unit(self) -> str:
        return "ADU" if self.noise is not None else "photons"

    def describe(self) -> str:
        """The status line's account of the frame: its size, what went into it, its maximum."""
        slow, fast = self.image.shape
        beam = self.model[2]
        parts = [f"simulated {slow}x{fast}"]
        if beam.n_sources > 1:
            parts.append(f"{beam.n_sources} sources")
        if self.model[1].has_sensor:
            parts.append(f"{self.values['sensor_thickness_um']:g} µm sensor")
        if self.background_mean > 0:
            parts.append(f"background {self.background_mean:.3g} photons/px")
        text = ", ".join(parts)
        if self.noise is None:
            return f"{text}; max {float(self.image.max()):.3g} photons"
        psf = self.values["psf"]
        extras = [f"seed {self.noise.seed}"]
        if self.values["readout_noise_adu"] > 0:
            extras.append(f"readout {self.values['readout_noise_adu']:g} ADU")
        if psf != "none":
            extras.append(f"{psf} PSF {self.values['psf_fwhm_um']:g} µm")
        overloads = f", {self.noise.overloads} overloads" if self.noise.overloads else ""
        return (
            f"{text}; showing the noisy image ({', '.join(extras)}): max {float(self.image.max()):.6g} ADU"
            f"{overloads} (noiseless max {float(self.photons.max()):.3g} photons)"
        )


def render(values: Mapping, cancelled: Callable[[], bool] | None = None) -> Rendered:
    """The frame for ``values`` (see the module docstring); ValueError names a bad value.

    ``cancelled``: asked between blocks of rows (about 20 a pass); once it returns True the
    work stops with :class:`Cancelled`, so a request nobody will see frees the CPU.
    """
    import torch

    import braggsim
    from braggsim.noise import noisify

    progress = None
    if cancelled is not None:

        def progress(_fraction: float) -> None:
            if cancelled():
                raise Cancelled

    checked = check_scene(values)
    crystal, detector, beam = build_model(checked)
    materials = build_backgrounds(checked)
    detector_model = build_noise(checked)
    with torch.no_grad():
        photons = braggsim.simulate(crystal, detector, beam, progress=progress).numpy().astype(np.float32, copy=False)
        background = None
        for material in materials:
            layer = braggsim.simulate_background(detector, beam, material, progress=progress).numpy()
            background = layer if background is None else background + layer
    background_mean = 0.0
    if background is not None:
        photons = photons + background.astype(np.float32, copy=False)
        background_mean = float(background.mean())
    noise = None
    image = photons
    if detector_model is not None:
        noise = noisify(
            photons,
            pixel_size_mm=float(checked["pixel_size_mm"]),
            seed=int(checked["noise_seed"]),
            model=detector_model,
        )
        image = noise.counts.astype(np.float32)
    return Rendered(image, photons, background_mean, noise, (crystal, detector, beam), checked)
