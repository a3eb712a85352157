"""nanoBragg's extra outputs: PGM images, a sin(theta)/lambda profile, pixel printouts.

Each function turns a finished image (slow, fast) and its model into bytes or text; the
command line writes them (atomically, with the other outputs).
"""

from __future__ import annotations

import numpy as np
import torch

from .beam import Beam
from .detector import Detector, detector_frame
from .sample_geometry import polarization, sample_geometry

PGM_TARGET = 250.0  # nanoBragg: pgm_scale = 250 / (5 rmsd)


def image_statistics(image: np.ndarray, detector: Detector) -> dict:
    """nanoBragg's mean, rms and rmsd over the simulated pixels (roi and mask)."""
    data = np.asarray(image, dtype=np.float64)
    keep = detector.simulated_pixels()
    values = data[keep] if keep is not None else data.ravel()
    count = max(values.size, 1)
    mean = float(values.sum() / count)
    rms = float(np.sqrt((values * values).sum() / max(count - 1, 1)))
    rmsd = float(np.sqrt(((values - mean) ** 2).sum() / max(count - 1, 1)))
    return {"mean": mean, "rms": rms, "rmsd": rmsd}


def pgm_scale(image: np.ndarray, detector: Detector, intfile_scale: float) -> float:
    """nanoBragg's default -pgmscale: 250 / (5 rmsd), or the -intfile scale for a flat image."""
    rmsd = image_statistics(image, detector)["rmsd"]
    return PGM_TARGET / (5.0 * rmsd) if rmsd > 0 else intfile_scale


def pgm_bytes(image: np.ndarray, detector: Detector, scale: float) -> bytes:
    """An 8-bit binary PGM (P5) of ``image * scale``, truncated to 0..255 as nanoBragg does."""
    data = np.asarray(image, dtype=np.float64) * scale
    pixels = np.clip(np.nan_to_num(data, nan=0.0, posinf=255.0, neginf=0.0), 0, 255).astype(np.uint8)
    keep = detector.simulated_pixels()
    if keep is not None:
        pixels[~keep] = 0
    spixels, fpixels = pixels.shape
    header = f"P5\n{fpixels} {spixels}\n# pixels scaled by {scale:g}\n255\n".encode("ascii")
    return header + pixels.tobytes()


def _centre_rays(detector: Detector, beam: Beam, rows: range) -> tuple:
    """Unit diffracted rays (r, f, 3) at the pixel centres of the first layer, the frame."""
    frame = detector_frame(detector, torch.float64, "cpu")
    pixel = torch.tensor(float(detector.pixel_size_mm), dtype=torch.float64)
    geo = sample_geometry(detector, frame, pixel, rows, 1)
    return geo, frame


def stol_profile(image: np.ndarray, detector: Detector, beam: Beam, bins: int = 100) -> str:
    """The image's mean against sin(theta)/lambda (pixel centres, central beam and
    wavelength), as text: ``stol mean rmsd pixels`` a line, empty bins left out."""
    with torch.no_grad():
        geo, frame = _centre_rays(detector, beam, range(detector.spixels))
        stol = (0.5 * torch.linalg.vector_norm(geo.diffracted[:, :, 0, 0] - frame.beam, dim=-1)).numpy()
    stol = stol / float(beam.wavelength_A)
    data = np.asarray(image, dtype=np.float64)
    keep = detector.simulated_pixels()
    keep = np.ones(data.shape, dtype=bool) if keep is None else keep
    values, where = data[keep], stol[keep]
    edges = np.linspace(where.min(), where.max(), bins + 1) if values.size else np.zeros(2)
    index = np.clip(np.digitize(where, edges) - 1, 0, bins - 1)
    lines = ["# stol(1/A) mean(photons/pixel) rmsd pixels"]
    for b in range(bins):
        chosen = values[index == b]
        if chosen.size == 0:
            continue
        centre = 0.5 * (edges[b] + edges[b + 1])
        lines.append(f"{centre:.6g} {chosen.mean():.6g} {chosen.std():.6g} {chosen.size}")
    return "\n".join(lines) + "\n"


def printout_lines(
    image: np.ndarray, crystal, detector: Detector, beam: Beam, pixel: tuple | None, oversample: int = 1
) -> list[str]:
    """nanoBragg's -printout: every pixel (or only ``pixel`` = (fast, slow)) with its
    sin(theta)/lambda, position (m), fractional hkl of the first domain, polarization,
    solid angle, capture fraction and value, all at its first sample."""
    from .crystal import lattice_axes

    with torch.no_grad():
        if pixel is not None:
            fast, slow = pixel
            if not (0 <= fast < detector.fpixels and 0 <= slow < detector.spixels):
                return [
                    f"-printout_pixel {fast} {slow} lies outside the {detector.fpixels}x{detector.spixels} detector"
                ]
            rows = range(slow, slow + 1)
        else:
            rows = range(detector.spixels)
        frame = detector_frame(detector, torch.float64, "cpu")
        pixel_mm = torch.tensor(float(detector.pixel_size_mm), dtype=torch.float64)
        geo = sample_geometry(detector, frame, pixel_mm, rows, oversample)
        incident, wavelengths, _ = beam.source_tensors(frame.beam, frame.polar_axis, torch.float64, "cpu")
        diffracted = geo.diffracted[:, :, 0, 0]
        scattering = (diffracted - incident[0]) / wavelengths[0]
        axes = lattice_axes(crystal, frame.spindle_axis, torch.float64, "cpu")[0]
        hkl = scattering @ axes.T
        kahn = torch.tensor(float(beam.polarization), dtype=torch.float64)
        polar = (
            torch.ones_like(diffracted[..., 0])
            if beam.nopolar
            else polarization(kahn, incident[0], diffracted, frame.polar_axis)
        )
        position_m = diffracted * geo.airpath_mm[:, :, 0, 0, None] * 1e-3
    lines = []
    for r, slow in enumerate(rows):
        columns = [pixel[0]] if pixel is not None else range(detector.fpixels)
        for fast in columns:
            stol = 0.5 * float(torch.linalg.vector_norm(scattering[r, fast]))
            h, k, l = (float(x) for x in hkl[r, fast])
            lines.append(
                f"{fast:4d} {slow:4d} : stol = {stol:g}  at {' '.join(f'{float(x):g}' for x in position_m[r, fast])}  "
                f"hkl= {h:f} {k:f} {l:f}  polar {float(polar[r, fast]):.10g}  omega {float(geo.omega[r, fast, 0, 0]):.10g}  "
                f"capfrac {1.0 if geo.capture is None else float(geo.capture[r, fast, -1, 0]):.10g}  pixel {float(image[slow, fast]):.10g}"
            )
    return lines
