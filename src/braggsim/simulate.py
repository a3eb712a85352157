"""The forward model: nanoBragg's pixel sum, vectorised and differentiable.

pixel = r_e^2 * fluence / steps * sum over (subpixels, phi steps, mosaic domains)
        of F_cell^2 * F_latt^2, times polarization and solid angle,
with steps = domains * phi_steps * oversample^2.  Pixels are processed in blocks of
rows; when gradients are needed each block is checkpointed, so memory stays bounded
by one block during the backward pass too.
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from . import _fast
from . import _validate as v
from ._memo import BoundedMemo
from .beam import R_E_SQ, Beam, polarization_factor
from .crystal import Crystal, lattice_axes, oriented_real_axes, oriented_reciprocal_axes
from .detector import Detector, DetectorFrame, detector_frame, subpixel_positions
from .lattice import lattice_factor, nearest_integer
from .structure_factors import StructureFactors

# evaluations (subpixel x orientation) per block; ~100 MB of float32 intermediates
DEFAULT_BLOCK_EVALUATIONS = 1 << 21
# "auto": the fused native kernel where it computes the model exactly, else torch
KERNELS = ("auto", "native", "torch")


def _tensor_fields(*components):
    for component in components:
        for value in vars(component).values():
            if isinstance(value, torch.Tensor):
                yield value
            elif isinstance(value, (tuple, list)):
                yield from (x for x in value if isinstance(x, torch.Tensor))


def resolve_dtype_device(crystal, detector, beam, dtype=None, device=None):
    """The caller's dtype/device, else those of the first tensor field, else float32/CPU."""
    tensors = list(_tensor_fields(crystal, detector, beam))
    if dtype is None:
        floats = [t.dtype for t in tensors if t.is_floating_point()]
        dtype = floats[0] if floats else torch.float32
    if device is None:
        device = tensors[0].device if tensors else torch.device("cpu")
    return dtype, torch.device(device)


def auto_oversample(crystal: Crystal, detector: Detector, beam: Beam) -> int:
    """nanoBragg's rule: ceil(3 * largest crystal edge / (lambda * distance / pixel)), >= 1."""
    if detector.oversample is not None:
        return detector.oversample
    with torch.no_grad():
        real = oriented_real_axes(crystal, torch.float64, "cpu")
        lengths = torch.linalg.vector_norm(real, dim=-1)
        sizes_A = [float(lengths[i]) * v.as_number(n) for i, n in enumerate(crystal.N_cells)]
    reciprocal_pixel_A = (
        v.as_number(beam.wavelength_A) * v.as_number(detector.distance_mm) / v.as_number(detector.pixel_size_mm)
    )
    return max(1, math.ceil(3 * max(sizes_A) / reciprocal_pixel_A))


_FRAMES = BoundedMemo(16)
# subpixel geometry of a refinement's fixed detector: up to 32 MB, no entry over 8 MB
_GEOMETRY = BoundedMemo(64, max_bytes=32 << 20, size_of=lambda tensors: sum(t.nbytes for t in tensors))


def _frame_for(detector: Detector, dtype, device) -> DetectorFrame:
    """``detector_frame``, memoised on the detector's values when none of them is a tensor.

    A refinement rebuilds the model every step with the same fixed detector; the key is
    the full set of field values, so a changed field can never meet a stale frame.
    """
    values = tuple(tuple(value) if isinstance(value, (tuple, list)) else value for value in vars(detector).values())
    key = None if any(isinstance(x, torch.Tensor) for x in _tensor_fields(detector)) else (values, dtype, str(device))
    return _FRAMES.get_or_build(key, lambda: detector_frame(detector, dtype, device))


class ForwardModel:
    """Everything that does not depend on the pixel, prepared once per ``simulate`` call."""

    def __init__(self, crystal: Crystal, detector: Detector, beam: Beam, dtype, device, kernel: str = "auto"):
        crystal.validate()
        if (
            crystal.hkl is None
            and v.as_number(crystal.default_F) == 0
            and not (isinstance(crystal.default_F, torch.Tensor) and crystal.default_F.requires_grad)
        ):
            raise ValueError("no structure factors: give the crystal an hkl table or a default_F > 0")
        self.crystal, self.detector, self.beam = crystal, detector, beam
        self.dtype, self.device = dtype, device
        self.frame: DetectorFrame = _frame_for(detector, dtype, device)
        self.oversample = auto_oversample(crystal, detector, beam)
        self.axes = lattice_axes(crystal, self.frame.spindle_axis, dtype, device)  # (K, 3, 3)
        # only the gauss and tophat transforms need the reciprocal axes
        self.reciprocal = (
            oriented_reciprocal_axes(crystal, dtype, device) if crystal.shape in ("gauss", "tophat") else None
        )
        # geometry built without a graph when nothing in it is refined: a shorter backward
        self.geometry_grad = any(t.requires_grad for t in _tensor_fields(detector)) or any(
            isinstance(x, torch.Tensor) and x.requires_grad for x in (beam.wavelength_A, beam.polarization)
        )
        self.n_cells = v.stack3(crystal.N_cells, dtype, device)
        self.wavelength_A = v.to_tensor(beam.wavelength_A, dtype, device)
        self.kahn = v.to_tensor(beam.polarization, dtype, device)
        self.pixel_mm = v.to_tensor(detector.pixel_size_mm, dtype, device)
        self.factors = StructureFactors(crystal.hkl, v.to_tensor(crystal.default_F, dtype, device))
        self.interpolate = crystal.use_interpolation() and crystal.hkl is not None
        steps = self.axes.shape[0] * self.oversample**2
        fluence = v.to_tensor(beam.fluence, dtype, device)
        self.scale = R_E_SQ * fluence / steps
        self.native = self._choose_native(kernel)

    def _choose_native(self, kernel: str) -> bool:
        """Whether the fused native kernel can compute this model exactly."""
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if kernel == "torch":
            return False
        reasons = []
        if self.crystal.shape != "square":
            reasons.append(f"lattice shape {self.crystal.shape!r}")
        if self.interpolate:
            reasons.append("interpolated structure factors")
        if self.dtype not in (torch.float32, torch.float64) or self.device.type != "cpu":
            reasons.append(f"{self.dtype} on {self.device}")
        if self.n_cells.requires_grad or any(float(n) != round(float(n)) for n in self.n_cells.detach().cpu()):
            reasons.append("non-integer or refined N_cells")
        if self.crystal.hkl is not None and self.factors.default_F.requires_grad:
            reasons.append("a refined default_F with an hkl table")
        if not reasons and not _fast.available():
            reasons.append(f"no native kernel ({_fast.unavailable_reason()})")
        if reasons and kernel == "native":
            raise ValueError(f"kernel='native' cannot compute this model: {', '.join(reasons)}")
        if reasons:
            return False
        self._n_cells_int = [round(float(n)) for n in self.n_cells.detach().cpu()]
        if self.crystal.hkl is not None:
            self._table = _fast.Table(
                self.factors._values.detach(), self.crystal.hkl.index_min, v.as_number(self.factors.default_F)
            )
        else:
            self._table = None
        return True

    @property
    def n_orientations(self) -> int:
        return self.axes.shape[0]

    def rows_per_block(self, block_evaluations: int) -> int:
        per_row = self.detector.fpixels * self.oversample**2 * self.n_orientations
        return max(1, block_evaluations // per_row)

    def block(self, row_start: int, row_stop: int, *params: torch.Tensor) -> torch.Tensor:
        """Photons in pixel rows [row_start, row_stop), (rows, fpixels)."""
        constant = not (torch.is_grad_enabled() and self.geometry_grad)
        if self.native and constant and self.oversample <= _fast.MAX_NATIVE_OVERSAMPLE:
            scattering, omega, polar = self._constant_geometry(row_start, row_stop)
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.geometry_grad):
                scattering, omega, polar = self._geometry(row_start, row_stop)
        intensity = self._native_intensity(scattering) if self.native else self._torch_intensity(scattering)
        # per-subpixel factors weight the sum; otherwise nanoBragg takes the first subpixel's
        if self.detector.oversample_omega:
            intensity = intensity * omega
        if self.detector.oversample_polar:
            intensity = intensity * polar
        pixel = self.scale * intensity.sum(-1)
        if not self.detector.oversample_omega:
            pixel = pixel * omega[..., 0]
        if not self.detector.oversample_polar:
            pixel = pixel * polar[..., 0]
        return pixel

    def _native_geometry(self) -> _fast.DetectorGeometry:
        """The detector and beam as the native kernels take them (plain numbers in the
        model's dtype, so also a memo key)."""
        frame = self.frame
        incident = frame.beam
        b_in = torch.linalg.cross(frame.polar_axis, incident)
        b_in = b_in / torch.linalg.vector_norm(b_in)
        e_in = torch.linalg.cross(incident, b_in)
        e_in = e_in / torch.linalg.vector_norm(e_in)

        def vector(t):
            return tuple(t.detach().to(self.dtype).cpu().tolist())

        def number(t):
            return float(torch.as_tensor(t).detach().to(self.dtype))

        return _fast.DetectorGeometry(
            pix0_mm=vector(frame.pix0_mm),
            fast=vector(frame.fast),
            slow=vector(frame.slow),
            beam=vector(incident),
            e_in=vector(e_in),
            b_in=vector(b_in),
            pixel_mm=number(self.pixel_mm),
            close_distance_mm=number(frame.close_distance_mm),
            kahn=number(self.kahn),
            wavelength_A=number(self.wavelength_A),
            point_pixel=bool(self.detector.point_pixel),
            nopolar=bool(self.beam.nopolar),
            oversample_omega=bool(self.detector.oversample_omega),
            oversample_polar=bool(self.detector.oversample_polar),
        )

    def image_block(self, row_start: int, row_stop: int) -> torch.Tensor:
        """:meth:`block` without autograd, geometry and all in the native kernel."""
        with torch.no_grad():
            scale = self.scale
            if self._table is None:
                scale = scale * self.factors.default_F * self.factors.default_F
            return _fast.image_rows(
                self._native_geometry(),
                range(row_start, row_stop),
                self.detector.fpixels,
                self.oversample,
                self.axes,
                self._n_cells_int,
                self._table,
                scale=float(scale.to(self.dtype)),
                dtype=self.dtype,
            )

    def _constant_geometry(self, row_start: int, row_stop: int):
        """:meth:`_geometry` from the native kernel, for when no geometry field is refined.

        Small results are memoised on the exact geometry values (a refinement asks for the
        same ones every step); the key holds every input, so it cannot go stale.  The
        memoised tensors are shared between threads and never written to.
        """
        with torch.no_grad():
            geometry = self._native_geometry()
            key = (geometry, self.dtype, row_start, row_stop, self.detector.fpixels, self.oversample)
            return _GEOMETRY.get_or_build(
                key,
                lambda: _fast.geometry_rows(
                    geometry, range(row_start, row_stop), self.detector.fpixels, self.oversample, dtype=self.dtype
                ),
            )

    def _geometry(self, row_start: int, row_stop: int):
        """Scattering vectors (r, f, o2, 3) in 1/A; solid angles and polarization, (r, f, o2)
        where the detector oversamples them, else (r, f, 1) for the first subpixel only."""
        frame = self.frame
        positions = subpixel_positions(
            frame, self.pixel_mm, self.detector.fpixels, range(row_start, row_stop), self.oversample
        )  # (r, f, o2, 3) mm
        airpath = torch.linalg.vector_norm(positions, dim=-1)  # (r, f, o2)
        diffracted = positions / airpath[..., None]
        scattering = (diffracted - frame.beam) / self.wavelength_A  # (r, f, o2, 3) 1/A
        first = slice(None) if self.detector.oversample_omega else slice(0, 1)
        omega = self._solid_angle(airpath[..., first])
        first = slice(None) if self.detector.oversample_polar else slice(0, 1)
        polar = self._polarization(diffracted[..., first, :])
        return scattering, omega, polar

    def _torch_intensity(self, scattering: torch.Tensor) -> torch.Tensor:
        """sum over orientations of F^2 F_latt^2, (r, f, o2, 3) -> (r, f, o2)."""
        hkl = torch.einsum("rfsj,kij->rfski", scattering, self.axes)  # (r, f, o2, K, 3)
        hkl0 = nearest_integer(hkl.detach())
        f_latt = lattice_factor(hkl - hkl0, self.n_cells, self.crystal.shape, self.reciprocal, self.crystal.fudge)
        f_cell = self.factors.interpolated(hkl) if self.interpolate else self.factors.nearest(hkl0)
        return (f_cell * f_cell * f_latt * f_latt).sum(-1)

    def _native_intensity(self, scattering: torch.Tensor) -> torch.Tensor:
        """The same sum from the fused kernel (square shape, integer N only)."""
        summed = _fast.lattice_sum(scattering, self.axes, self._n_cells_int, self._table)
        if self._table is None:
            default_F = self.factors.default_F
            summed = summed * (default_F * default_F)
        return summed

    def _solid_angle(self, airpath_mm: torch.Tensor) -> torch.Tensor:
        if self.detector.point_pixel:
            airpath_m = airpath_mm * 1e-3
            return 1.0 / (airpath_m * airpath_m)
        pixel = self.pixel_mm
        return pixel * pixel / (airpath_mm * airpath_mm) * self.frame.close_distance_mm / airpath_mm

    def _polarization(self, diffracted: torch.Tensor) -> torch.Tensor:
        if self.beam.nopolar:
            return torch.ones_like(diffracted[..., 0])
        return polarization_factor(self.kahn, self.frame.beam, diffracted, self.frame.polar_axis)


def simulate(
    crystal: Crystal,
    detector: Detector,
    beam: Beam | None = None,
    *,
    dtype: torch.dtype | None = None,
    device=None,
    block_evaluations: int = DEFAULT_BLOCK_EVALUATIONS,
    kernel: str = "auto",
) -> torch.Tensor:
    """Simulate a still or rotation image the way nanoBragg does.

    Returns (spixels, fpixels) photons per pixel, differentiable in every tensor field of
    the inputs.  ``dtype``/``device`` default to those of the inputs' tensors, else
    float32 on the CPU.  ``kernel``: "auto" uses the fused native kernel
    (:mod:`braggsim._fast`) where it applies and plain torch elsewhere; "torch" forces
    the reference path; "native" insists on the kernel (ValueError where it cannot).
    """
    beam = beam if beam is not None else Beam()
    dtype, device = resolve_dtype_device(crystal, detector, beam, dtype, device)
    model = ForwardModel(crystal, detector, beam, dtype, device, kernel)
    rows = model.rows_per_block(block_evaluations)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in _tensor_fields(crystal, detector, beam))
    if not needs_grad and model.native and model.oversample <= _fast.MAX_NATIVE_OVERSAMPLE:
        # no intermediates beyond one chunk per thread: the whole image in one call
        return model.image_block(0, detector.spixels)
    blocks = []
    for start in range(0, detector.spixels, rows):
        stop = min(start + rows, detector.spixels)
        if needs_grad and rows < detector.spixels:
            blocks.append(checkpoint(model.block, start, stop, use_reentrant=False))
        else:
            blocks.append(model.block(start, stop))
    return torch.cat(blocks, dim=0)
