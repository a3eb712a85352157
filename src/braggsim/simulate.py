"""The forward model: nanoBragg's pixel sum, vectorised and differentiable.

pixel = r_e^2 * fluence / steps * sum over (sensor layers, subpixels, sources, phi
        steps, mosaic domains) of weight * F_cell^2 * F_latt^2, times polarization,
        solid angle and capture fraction,
with steps = sources * domains * phi_steps * oversample^2.  Pixels are processed in
blocks of rows; when gradients are needed each block is checkpointed, so memory stays
bounded by one block during the backward pass too.

Sources (divergence, dispersion, a source list), sensor layers and a curved detector
are extra samples of every pixel: they join the subpixels on the per-pixel sample axis
of the lattice sum (:meth:`ForwardModel._sample_block`), which the fused kernel handles
like any other sample.  An amorphous background (:mod:`braggsim.background`) is added
to the Bragg image when one is given.
"""

from __future__ import annotations

import contextlib
import math
import threading

import torch
from torch.utils.checkpoint import checkpoint

from . import _fast, _resources
from . import _validate as v
from ._memo import BoundedMemo
from .background import AmorphousBackground, background_rows
from .beam import R_E_SQ, Beam, polarization_factor
from .crystal import Crystal, lattice_axes, oriented_real_axes, oriented_reciprocal_axes
from .detector import Detector, DetectorFrame, detector_frame, subpixel_positions
from .lattice import lattice_factor, nearest_integer
from .sample_geometry import polarization, sample_geometry
from .sources import Sources
from .structure_factors import StructureFactors

# evaluations (subpixel x orientation) per block; ~100 MB of float32 intermediates
DEFAULT_BLOCK_EVALUATIONS = 1 << 21
# "auto": the fused native kernel where it computes the model exactly, else torch
KERNELS = ("auto", "native", "torch")


def _tensor_fields(*components):
    for component in components:
        if component is None:
            continue
        for value in vars(component).values():
            if isinstance(value, torch.Tensor):
                yield value
            elif isinstance(value, (tuple, list)):
                yield from (x for x in value if isinstance(x, torch.Tensor))
            elif isinstance(value, Sources):
                yield from _tensor_fields(value)


def resolve_dtype_device(crystal, detector, beam, dtype=None, device=None):
    """The caller's dtype/device, else those of the first tensor field, else float32/CPU."""
    tensors = list(_tensor_fields(crystal, detector, beam))
    if dtype is None:
        floats = [t.dtype for t in tensors if t.is_floating_point()]
        dtype = floats[0] if floats else torch.float32
    if device is None:
        device = tensors[0].device if tensors else torch.device("cpu")
    return v.check_float_dtype(dtype), torch.device(device)


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
    # the frame does not depend on which pixels are simulated
    fields = {k: x for k, x in vars(detector).items() if k not in ("pixel_mask", "roi")}
    values = tuple(tuple(value) if isinstance(value, (tuple, list)) else value for value in fields.values())
    key = None if any(isinstance(x, torch.Tensor) for x in _tensor_fields(detector)) else (values, dtype, str(device))
    return _FRAMES.get_or_build(key, lambda: detector_frame(detector, dtype, device))


_serial_lock = threading.Lock()
_serial_users = 0  # threads inside _serial_torch
_serial_saved_threads = 1


@contextlib.contextmanager
def _serial_torch():
    """Run torch's elementwise ops on one thread.

    The per-pixel geometry is dozens of cheap, memory-bound ops; splitting each over
    threads costs more in wake-ups than it saves, above all on a busy machine (measured:
    the sample path's overhead fell from 2.3 s to 0.9 s at load 9 on 2 cores).  The
    lattice kernel, which is compute-bound, runs outside with all threads.

    torch's thread count is one setting for the whole process: a refinement thread and
    live simulation can be inside at once, so the first one in saves it and the last one
    out restores it (with a save and restore per caller, the second would save the 1 and
    leave torch on one thread for good).
    """
    global _serial_users, _serial_saved_threads
    with _serial_lock:
        if _serial_users == 0:
            _serial_saved_threads = torch.get_num_threads()
            if _serial_saved_threads != 1:
                torch.set_num_threads(1)
        _serial_users += 1
    try:
        yield
    finally:
        with _serial_lock:
            _serial_users -= 1
            if _serial_users == 0 and _serial_saved_threads != 1:
                torch.set_num_threads(_serial_saved_threads)


class ForwardModel:
    """Everything that does not depend on the pixel, prepared once per ``simulate`` call."""

    def __init__(
        self,
        crystal: Crystal,
        detector: Detector,
        beam: Beam,
        dtype,
        device,
        kernel: str = "auto",
        background: AmorphousBackground | None = None,
    ):
        v.revalidate(crystal, detector, beam)  # a part changed after construction is checked again
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
        # refuse, with the estimate, what cannot fit, before the orientations are built
        native_rate = crystal.shape == "square" and device.type == "cpu" and _fast.available()
        samples = beam.n_sources * detector.n_layers
        _resources.check_simulation(crystal, detector, self.oversample, dtype.itemsize, native_rate, samples)
        self.axes = lattice_axes(crystal, self.frame.spindle_axis, dtype, device)  # (K, 3, 3)
        # only the gauss and tophat transforms need the reciprocal axes
        self.reciprocal = (
            oriented_reciprocal_axes(crystal, dtype, device) if crystal.shape in ("gauss", "tophat") else None
        )
        # geometry built without a graph when nothing in it is refined: a shorter backward
        beam_geometry = [x for k, x in vars(beam).items() if k != "fluence"]
        self.geometry_grad = any(t.requires_grad for t in _tensor_fields(detector)) or any(
            t.requires_grad
            for x in beam_geometry
            for t in (_tensor_fields(x) if isinstance(x, Sources) else (x if isinstance(x, (tuple, list)) else [x]))
            if isinstance(t, torch.Tensor)
        )
        self.n_cells = v.stack3(crystal.N_cells, dtype, device)
        self.wavelength_A = v.to_tensor(beam.wavelength_A, dtype, device)
        self.kahn = v.to_tensor(beam.polarization, dtype, device)
        self.pixel_mm = v.to_tensor(detector.pixel_size_mm, dtype, device)
        # Crystal has read a path into an HKLTable by now
        self.factors = StructureFactors(crystal.hkl, v.to_tensor(crystal.default_F, dtype, device))  # type: ignore[arg-type]
        self.interpolate = crystal.use_interpolation() and crystal.hkl is not None
        self.background = background
        # sources, sensor layers, a curved detector and a resolution cut are extra samples
        # of every pixel; such models take the general sample path (never image_rows)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.geometry_grad):
            self.sources = beam.source_tensors(self.frame.beam, self.frame.polar_axis, dtype, device)
        self.n_sources = self.sources[0].shape[0]
        self.general = (
            beam.sources is not None
            or beam.has_grid()
            or detector.has_sensor
            or detector.curved
            or detector.d_min_A is not None
        )
        self.n_layers = detector.n_layers
        steps = self.axes.shape[0] * self.oversample**2 * self.n_sources
        self.fluence = v.to_tensor(beam.fluence, dtype, device)
        self.scale = R_E_SQ * self.fluence / steps
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
                self.factors.values.detach(),
                self.crystal.hkl.index_min,  # type: ignore[union-attr]
                v.as_number(self.factors.default_F),
            )
        else:
            self._table = None  # type: ignore[assignment]
        return True

    @property
    def n_orientations(self) -> int:
        return self.axes.shape[0]

    def rows_per_block(self, block_evaluations: int) -> int:
        samples = self.detector.fpixels * self.oversample**2 * self.n_samples_per_subpixel
        if self.general and self.native:
            # the kernel keeps no per-orientation intermediates: memory goes with the samples
            # (16 bytes each), and fewer, larger blocks spend less time launching torch ops
            return max(1, min(block_evaluations * 2 // samples, self.detector.spixels))
        return max(1, block_evaluations // (samples * self.n_orientations))

    @property
    def n_samples_per_subpixel(self) -> int:
        return self.n_sources * self.n_layers if self.general else 1

    def row_range(self) -> tuple[int, int]:
        """[first, stop) of the pixel rows that hold simulated pixels (the roi's rows)."""
        return _roi_rows(self.detector)

    def block(self, row_start: int, row_stop: int, *params: torch.Tensor) -> torch.Tensor:
        """Photons in pixel rows [row_start, row_stop), (rows, fpixels)."""
        pixel = self._sample_block(row_start, row_stop) if self.general else self._subpixel_block(row_start, row_stop)
        if self.background is not None:
            pixel = pixel + self.background_block(row_start, row_stop)
        return pixel

    def background_block(self, row_start: int, row_stop: int) -> torch.Tensor:
        """The amorphous background in pixel rows [row_start, row_stop), (rows, fpixels)."""
        return _background_block(self, row_start, row_stop)

    def _sample_block(self, row_start: int, row_stop: int) -> torch.Tensor:
        """:meth:`block` for models with several samples per subpixel (sources, layers).

        Samples run in nanoBragg's order (layer, subpixel, source) on one axis of the
        lattice sum.  Factors not oversampled come from nanoBragg's sample: solid angle
        from the first, polarization from the first not cut by d_min, and the capture
        fraction of the deepest layer at the first subpixel.  The (rows, fpixels,
        samples, 3) scattering tensor is written in one pass and read once by the
        kernel: everything else is per pixel or per (layer, subpixel).
        """
        incident, wavelengths, weights = self.sources
        detector = self.detector
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.geometry_grad), _serial_torch():
            geo = sample_geometry(detector, self.frame, self.pixel_mm, range(row_start, row_stop), self.oversample)
            inverse = 1.0 / wavelengths
            # S = d / lambda - i / lambda for every source, in one fused multiply-add
            scattering = torch.addcmul(-(incident * inverse[:, None]), geo.diffracted[..., None, :], inverse[:, None])
        rows, fpixels = scattering.shape[:2]
        samples = scattering.reshape(rows, fpixels, -1, 3)
        if self.native:
            summed = _fast.lattice_sum(samples, self.axes, self._n_cells_int, self._table)
        else:
            summed = self._torch_intensity(samples)
        with _serial_torch():
            return self._weigh_samples(summed.reshape(scattering.shape[:-1]), scattering, geo, incident, weights)

    def _weigh_samples(self, terms, scattering, geo, incident, weights) -> torch.Tensor:
        """Pixels from the lattice sums of every sample, terms (r, f, L, o2, S)."""
        detector = self.detector
        rows, fpixels = terms.shape[:2]
        keep = None
        if detector.d_min_A is not None:
            # nanoBragg skips a sample whose resolution 1/(2 stol) is finer than d_min
            stol = 0.5 * torch.linalg.vector_norm(scattering.detach(), dim=-1)
            keep = ~(0.5 / stol.clamp_min(1e-30) < float(detector.d_min_A))
            terms = torch.where(keep, terms, torch.zeros_like(terms))
        per_sample = None  # (r, f, L, o2) factors of the layer and subpixel
        if detector.oversample_thick and geo.capture is not None:
            per_sample = geo.capture
        if detector.oversample_omega:
            per_sample = geo.omega if per_sample is None else per_sample * geo.omega
        if detector.oversample_polar and not self.beam.nopolar:
            terms = terms * polarization(self.kahn, incident, geo.diffracted[..., None, :], self.frame.polar_axis)
        if per_sample is not None:
            terms = terms * per_sample[..., None]
        uniform = self.beam.sources is None or self.beam.sources.weights is None
        if uniform and not weights.requires_grad:
            weights = torch.ones_like(weights)
        # a matrix-vector product sums the samples far faster than a reduction over short rows
        per_source = terms.reshape(rows * fpixels, -1, weights.shape[0]) @ weights  # (r f, L o2)
        pixel = (per_source.sum(-1) if per_source.shape[-1] > 1 else per_source[:, 0]).reshape(rows, fpixels)
        # per-pixel factors multiply first, so the image is touched once
        scale = self.scale
        if self.native and self._table is None:
            scale = scale * (self.factors.default_F * self.factors.default_F)
        factor = None
        if not detector.oversample_thick and geo.capture is not None:
            factor = geo.capture[:, :, -1, 0]
        if not detector.oversample_omega:
            omega = geo.omega[:, :, 0, 0]
            factor = omega if factor is None else factor * omega
        if not detector.oversample_polar and not self.beam.nopolar:
            polar = self._first_polarization(geo.diffracted, incident, keep)
            factor = polar if factor is None else factor * polar
        if factor is None:
            return pixel * scale
        return pixel * (factor * scale)

    def _first_polarization(self, diffracted: torch.Tensor, incident: torch.Tensor, keep) -> torch.Tensor:
        """Polarization of each pixel's first sample (the first one kept, with d_min), (r, f)."""
        if keep is None:
            return polarization(self.kahn, incident[0], diffracted[:, :, 0, 0], self.frame.polar_axis)
        every = polarization(self.kahn, incident, diffracted[..., None, :], self.frame.polar_axis)
        rows, fpixels = every.shape[:2]
        first = keep.reshape(rows, fpixels, -1).to(torch.uint8).argmax(-1, keepdim=True)
        return every.reshape(rows, fpixels, -1).gather(-1, first)[..., 0]

    def _subpixel_block(self, row_start: int, row_stop: int) -> torch.Tensor:
        """:meth:`block` for one source on a flat, thin detector: subpixels only."""
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
    background: AmorphousBackground | None = None,
    dtype: torch.dtype | None = None,
    device=None,
    block_evaluations: int = DEFAULT_BLOCK_EVALUATIONS,
    kernel: str = "auto",
    progress=None,
) -> torch.Tensor:
    """Simulate a still or rotation image the way nanoBragg does.

    Returns (spixels, fpixels) photons per pixel, differentiable in every tensor field of
    the inputs.  ``dtype``/``device`` default to those of the inputs' tensors, else
    float32 on the CPU.  ``kernel``: "auto" uses the fused native kernel
    (:mod:`braggsim._fast`) where it applies and plain torch elsewhere; "torch" forces
    the reference path; "native" insists on the kernel (ValueError where it cannot).
    ``background``: an :class:`~braggsim.background.AmorphousBackground` added to the
    spots (nonBragg's physics, with this beam's sources and this detector).  Pixels
    outside ``detector.roi`` or ``detector.pixel_mask`` are 0.  ``progress``: called with
    the fraction of rows done after each block.
    """
    beam = beam if beam is not None else Beam()
    dtype, device = resolve_dtype_device(crystal, detector, beam, dtype, device)
    model = ForwardModel(crystal, detector, beam, dtype, device, kernel, background)
    first, stop = model.row_range()
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in _tensor_fields(crystal, detector, beam, background)
    )
    if (
        not needs_grad
        and model.native
        and not model.general
        and model.background is None
        and model.oversample <= _fast.MAX_NATIVE_OVERSAMPLE
    ):
        # no intermediates beyond one chunk per thread: the whole image in one call
        rows = stop - first if progress is None else max(1, (stop - first + 19) // 20)
        image = _blocks(model.image_block, first, stop, rows, False, progress)
    else:
        image = _blocks(model.block, first, stop, model.rows_per_block(block_evaluations), needs_grad, progress)
    return _finish(image, model, first, stop)


def _roi_rows(detector: Detector) -> tuple[int, int]:
    """[first, stop) of the pixel rows inside ``detector.roi`` (all rows without one)."""
    if detector.roi is None:
        return 0, detector.spixels
    _, _, ymin, ymax = detector.roi
    first = min(max(ymin, 0), detector.spixels)
    return first, max(first, min(ymax + 1, detector.spixels))


def _background_block(model, row_start: int, row_stop: int) -> torch.Tensor:
    """The background of a ForwardModel or _BackgroundModel in rows [row_start, row_stop)."""
    if model.background is None:
        raise ValueError("the model has no background")
    with _serial_torch():
        return background_rows(
            model.background,
            model.detector,
            model.frame,
            model.pixel_mm,
            range(row_start, row_stop),
            model.oversample,
            model.sources,
            model.kahn,
            model.beam.nopolar,
            model.fluence,
        )


def _blocks(block, first: int, stop: int, rows: int, needs_grad: bool, progress=None) -> torch.Tensor | None:
    """``block`` over rows [first, stop) in chunks of ``rows`` (checkpointed for gradients)."""
    blocks = []
    for start in range(first, stop, rows):
        end = min(start + rows, stop)
        if needs_grad and rows < stop - first:
            blocks.append(checkpoint(block, start, end, use_reentrant=False))
        else:
            blocks.append(block(start, end))
        if progress is not None:
            progress((end - first) / (stop - first))
    return torch.cat(blocks, dim=0) if blocks else None


def _finish(rows_image, model, first: int, stop: int) -> torch.Tensor:
    """The full (spixels, fpixels) image: rows outside [first, stop) and pixels outside the
    roi or mask are 0."""
    detector = model.detector
    if rows_image is None:
        return torch.zeros(detector.shape, dtype=model.dtype, device=model.device)
    if first > 0 or stop < detector.spixels:
        zeros = rows_image.new_zeros
        rows_image = torch.cat(
            [zeros((first, detector.fpixels)), rows_image, zeros((detector.spixels - stop, detector.fpixels))]
        )
    keep = detector.simulated_pixels()
    if keep is not None:
        keep = torch.as_tensor(keep, device=rows_image.device)
        rows_image = torch.where(keep, rows_image, torch.zeros_like(rows_image))
    return rows_image


class _BackgroundModel:
    """The parts of :class:`ForwardModel` that the background needs, without a crystal."""

    def __init__(self, detector, beam, background, oversample, dtype, device):
        self.detector, self.beam, self.background = detector, beam, background
        self.dtype, self.device = dtype, device
        self.oversample = oversample
        self.frame = _frame_for(detector, dtype, device)
        self.pixel_mm = v.to_tensor(detector.pixel_size_mm, dtype, device)
        self.kahn = v.to_tensor(beam.polarization, dtype, device)
        self.fluence = v.to_tensor(beam.fluence, dtype, device)
        self.sources = beam.source_tensors(self.frame.beam, self.frame.polar_axis, dtype, device)

    def background_block(self, row_start: int, row_stop: int) -> torch.Tensor:
        return _background_block(self, row_start, row_stop)

    def row_range(self) -> tuple[int, int]:
        return _roi_rows(self.detector)


def simulate_background(
    detector: Detector,
    beam: Beam | None,
    background: AmorphousBackground,
    *,
    oversample: int | None = None,
    dtype: torch.dtype | None = None,
    device=None,
    block_evaluations: int = DEFAULT_BLOCK_EVALUATIONS,
    progress=None,
) -> torch.Tensor:
    """The amorphous background alone, as nanoBragg's nonBragg renders it, (spixels, fpixels).

    ``oversample``: subpixels per pixel edge (None = ``detector.oversample``, else 1, as
    nonBragg).  Differentiable in the background's and the geometry's tensor fields.
    """
    beam = beam if beam is not None else Beam()
    oversample = oversample or detector.oversample or 1
    tensors = list(_tensor_fields(detector, beam, background))
    if dtype is None:
        floats = [t.dtype for t in tensors if t.is_floating_point()]
        dtype = floats[0] if floats else torch.float32
    device = torch.device(device if device is not None else (tensors[0].device if tensors else "cpu"))
    model = _BackgroundModel(detector, beam, background, oversample, dtype, device)
    first, stop = model.row_range()
    per_row = detector.fpixels * oversample**2 * beam.n_sources * detector.n_layers
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    rows = max(1, block_evaluations // max(1, per_row) // 4)
    image = _blocks(model.background_block, first, stop, rows, needs_grad, progress)
    return _finish(image, model, first, stop)
