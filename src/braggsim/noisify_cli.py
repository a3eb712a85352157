"""``braggsim noisify``: noisify's command line on :func:`braggsim.noise.noisify`.

Takes noisify's flags with noisify's meanings and writes the same files: with the same
seeds the noise image is byte-identical to noisify's.  Differences, all deliberate: a
flag that is not listed is an error (noisify ignores it); bad values are refused with
one line naming the flag or file; only the files named are written, except the noise
image, which goes to noisify's default name ``noiseimage.img`` when not named; every
file is written to a temporary name and renamed only when all are complete.
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

import numpy as np

from .flag_values import is_number

HELP = """\
usage: braggsim noisify -floatfile FILE [flags]

Turn a photons/pixel float image (nanoBragg's -floatfile) into a detector image, as
nanoBragg's companion program noisify does: beam flicker, per-pixel calibration error,
Poisson photon counting, point-spread function, gain, ADC offset and readout noise,
written as SMV.  With the same seeds the noise image is pixel-identical to noisify's.
The order, per pixel in raster order: flicker, calibration error, Poisson draw; then the
PSF over the whole noisy photon image (photons blurred past the rendering radius are
added back evenly); then gain, ADC offset and readout noise, truncated to integers.

input:
  -floatfile FILE          raw float32 photons/pixel, slow axis first (aliases -floatimage,
                           -bin; a bare argument is taken as the input file too)
  -scale s                 multiply the input by s first (default 1)
  -fluence f               photons/m^2: the input is multiplied by r_e^2 * f (default
                           1.25932015286227e29, i.e. by 1)
  -detpixels n             image is n x n pixels
  -detpixels_x n  -detpixels_y n
                           fast / slow pixel counts (default: guessed from the file size,
                           as noisify: the most nearly square factorisation)
  -header FILE             take the image size and pixel size from this SMV file and copy
                           its header verbatim into the outputs

detector model:
  -gain g                  ADU per photon (default 1)
  -adc ADU                 offset added to every pixel (default 40)
  -readout_noise ADU       Gaussian readout noise sigma, in ADU (aliases -readout,
                           -readnoise; default 0)
  -flicker f               fractional beam-intensity error, drawn per pixel (default 0)
  -calibration f           fractional per-pixel sensitivity error, static from shot to
                           shot (default 0.03)
  -seed n                  seed of every draw but the calibration error (default: the time)
  -calib_seed n            seed of the calibration error (default: noisify's built-in one).
                           With -flicker on, noisify's calibration error takes the spare
                           deviate of each flicker pair instead, and this seed is not used
  -psf gauss|fiber         point-spread function (default: none)
  -psf_fwhm um             its full width at half maximum in um (aliases -psf_size,
                           -psf_width; default 46)
  -psf_radius px           rendering radius in pixels (default 0: chosen per pixel from its
                           photon count, as noisify)
  -bits 16|32              integer size of the output images (default 16)
  -nonoise                 no noise: the PSF blurs the noiseless image, and only the
                           noiseless image is written (to intimage.img unless named)
  -badpix_seed n  -hotpix_seed n
                           parsed by noisify but never used; accepted, no effect

outputs (SMV, 512-byte header, little-endian; nothing is written when a run fails):
  -noisefile FILE          the noise image (alias -noiseimage; default noiseimage.img)
  -intfile FILE            the noiseless image: photons * gain + ADC offset (alias -intimage)
  -pgmfile FILE            the noiseless image as an 8-bit PGM, clipped at 255 (alias -pgmimage)
  -nopgm                   accepted (no PGM is written unless -pgmfile is given)

header values (only written into the header; ignored with -header):
  -pixel mm                pixel size (default 0.1); also sets the PSF width in pixels
  -distance mm             detector distance (default 100)
  -lambda A                wavelength (default 1)
  -Xbeam mm  -Ybeam mm     beam centre (default: the image centre)
  -phi deg  -osc deg       PHI / OSC_START and OSC_RANGE (default 0 and 1)
  -detsize mm  -detsize_x mm  -detsize_y mm
                           accepted; noisify derives the size from the pixel count

Unlike noisify, braggsim writes the noiseless -intfile and the PGM only when named.
"""

# canonical flag -> aliases; every flag takes one value unless it is a switch
_ALIASES = {
    "-floatfile": ("-floatimage", "-bin"),
    "-scale": (),
    "-fluence": (),
    "-detpixels": (),
    "-detpixels_x": (),
    "-detpixels_y": (),
    "-header": (),
    "-gain": (),
    "-adc": (),
    "-readout_noise": ("-readout", "-readnoise"),
    "-flicker": (),
    "-calibration": (),
    "-seed": (),
    "-calib_seed": (),
    "-badpix_seed": (),
    "-hotpix_seed": (),
    "-psf": (),
    "-psf_fwhm": ("-psf_size", "-psf_width"),
    "-psf_radius": (),
    "-bits": (),
    "-noisefile": ("-noiseimage",),
    "-intfile": ("-intimage",),
    "-pgmfile": ("-pgmimage",),
    "-pixel": (),
    "-distance": (),
    "-lambda": (),
    "-Xbeam": (),
    "-Ybeam": (),
    "-phi": (),
    "-osc": (),
    "-detsize": (),
    "-detsize_x": (),
    "-detsize_y": (),
}
_CANONICAL = {alias: flag for flag, aliases in _ALIASES.items() for alias in (flag, *aliases)}
SWITCHES = ("-nonoise", "-nopgm")
ALL_FLAGS = tuple(sorted(set(_CANONICAL) | set(SWITCHES)))


class NoisifyError(ValueError):
    """Bad input to ``braggsim noisify``: one line, exit status 2."""


def split_noisify_flags(argv: list[str]) -> tuple[dict, list[str]]:
    """argv -> ({canonical flag: value}, [switches]); the last of repeated flags wins."""
    found: dict = {}
    switches: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in SWITCHES:
            switches.append(token)
            i += 1
            continue
        if token in _CANONICAL:
            if i + 1 >= len(argv):
                raise NoisifyError(f"flag {token} needs a value")
            found[_CANONICAL[token]] = argv[i + 1]
            i += 2
            continue
        if token.startswith("-") and not is_number(token):
            raise NoisifyError(f"unsupported flag {token!r} (see 'braggsim noisify --help')")
        if "-floatfile" in found:
            raise NoisifyError(f"unexpected argument {token!r}: the input file is already {found['-floatfile']!r}")
        found["-floatfile"] = token  # noisify takes a bare file name as the input
        i += 1
    return found, switches


# duplicates: _number and _integer are alike (and like noise._require and _text_table's number
# reading) on purpose: noisify's own rules and messages (NoisifyError, 32-bit integers)
def _number(found: dict, flag: str, default: float, *, positive=False, non_negative=False) -> float:
    if flag not in found:
        return default
    text = found[flag]
    try:
        value = float(text)
    except ValueError:
        raise NoisifyError(f"flag {flag} needs a number, got {text!r}") from None
    if not math.isfinite(value):
        raise NoisifyError(f"flag {flag} needs a finite number, got {text!r}")
    if positive and not value > 0:
        raise NoisifyError(f"flag {flag} must be > 0, got {text!r}")
    if non_negative and value < 0:
        raise NoisifyError(f"flag {flag} must be >= 0, got {text!r}")
    return value


def _integer(found: dict, flag: str, default, *, positive=False, non_negative=False):
    if flag not in found:
        return default
    text = found[flag]
    try:
        value = float(text)
    except ValueError:
        raise NoisifyError(f"flag {flag} needs an integer, got {text!r}") from None
    if not value.is_integer() or abs(value) >= 2**31:
        raise NoisifyError(f"flag {flag} needs an integer that fits 32 bits, got {text!r}")
    if positive and value <= 0:
        raise NoisifyError(f"flag {flag} must be > 0, got {text!r}")
    if non_negative and value < 0:
        raise NoisifyError(f"flag {flag} must be >= 0 (0 = from the file size), got {text!r}")
    return int(value)


# ------------------------------------------------------------------ the -header file
def read_header(path: str) -> dict:
    """An SMV header as noisify reads it: {"bytes", "width", "height", "pixel_mm"}.

    Like noisify, values are read with C's atof from the last occurrence of each keyword.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise NoisifyError(f"-header {path!r}: {exc.strerror or exc}") from None
    if len(raw) < SMV_MIN:
        raise NoisifyError(f"-header {path!r}: shorter than a 512-byte SMV header ({len(raw)} bytes)")
    if not raw.startswith(b"{\nHEADER_BYT"):
        raise NoisifyError(f"-header {path!r} does not look like an SMV (ADSC) frame")
    size = int(_value_of(raw[:512], "HEADER_BYTES"))
    if not 0 < size <= len(raw):
        raise NoisifyError(f"-header {path!r}: HEADER_BYTES={size} does not fit the file ({len(raw)} bytes)")
    header = raw[:size]
    width, height = int(_value_of(header, "SIZE1")), int(_value_of(header, "SIZE2"))
    if width == 0:
        width = height = int(_value_of(header, "DETECTOR_DIMENSIONS"))
    if width <= 0 or height <= 0:
        raise NoisifyError(f"-header {path!r}: no usable SIZE1/SIZE2 (got {width} x {height})")
    pixel = _value_of(header, "PIXEL_SIZE")
    return {"bytes": header, "width": width, "height": height, "pixel_mm": None if math.isnan(pixel) else pixel}


SMV_MIN = 512
_ATOF = re.compile(rb"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")


def _value_of(header: bytes, keyword: str) -> float:
    text = header.split(b"\0", 1)[0]  # the C string ends at the first NUL
    at = text.rfind(keyword.encode())
    if at < 0:
        return math.nan
    rest = text[at + len(keyword) :]
    equals = rest.find(b"=")
    if equals < 0:
        return 0.0
    match = _ATOF.match(rest[equals + 1 :])
    return float(match.group(1)) if match else 0.0


# -------------------------------------------------------------------- the image size
def image_shape(n_pixels: int, xpixels: int, ypixels: int) -> tuple[int, int, bool]:
    """(xpixels, ypixels, guessed) as noisify settles them from the file's pixel count."""
    guessed = False
    if not xpixels and not ypixels:
        guessed = True
        xpixels = int(math.sqrt(n_pixels))
        ypixels = n_pixels // xpixels
        while n_pixels != xpixels * ypixels and xpixels > 1:
            xpixels -= 1
            ypixels = n_pixels // xpixels
        if n_pixels != xpixels * ypixels:
            xpixels, ypixels = n_pixels, 1
    if xpixels and not ypixels:
        ypixels = n_pixels // xpixels
    if ypixels and not xpixels:
        xpixels = n_pixels // ypixels
    return xpixels, ypixels, guessed


def read_float_image(path: str) -> np.ndarray:
    """The input's float32 values (flat), refusing what noisify would misread."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise NoisifyError(f"-floatfile {path!r}: {exc.strerror or exc}") from None
    if not raw:
        raise NoisifyError(f"-floatfile {path!r} is empty")
    if len(raw) % 4:
        raise NoisifyError(f"-floatfile {path!r}: {len(raw)} bytes is not a whole number of 4-byte floats")
    values = np.frombuffer(raw, dtype="<f4")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise NoisifyError(
            f"-floatfile {path!r} has {bad.size} non-finite value(s) (the first at float {int(bad[0])}): "
            "not a photons/pixel image"
        )
    return values


# --------------------------------------------------------------------------- outputs
def noisify_header(
    *,
    bits: int,
    xpixels: int,
    ypixels: int,
    pixel_m: float,
    distance_m: float,
    wavelength_A: float,
    xbeam_m: float,
    ybeam_m: float,
    phi_deg: float,
    osc_deg: float,
) -> bytes:
    """noisify's own 512-byte SMV header, byte for byte (C's %g is Python's %g)."""
    kind = "unsigned_short" if bits == 16 else "long_integer"
    detsize_y = pixel_m * ypixels
    text = (
        f"{{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE={kind};\n"
        f"SIZE1={xpixels};\nSIZE2={ypixels};\nPIXEL_SIZE={pixel_m * 1000.0:g};\nDISTANCE={distance_m * 1000.0:g};\n"
        f"WAVELENGTH={wavelength_A:g};\nBEAM_CENTER_X={xbeam_m * 1000.0:g};\nBEAM_CENTER_Y={(detsize_y - ybeam_m) * 1000:g};\n"
        f"PHI={phi_deg:g};\nOSC_START={phi_deg:g};\nOSC_RANGE={osc_deg:g};\n"
        "DETECTOR_SN=000;\nBEAMLINE=fake;\n}\f"
    ).encode("ascii")
    return text + b" " * max(0, 512 - len(text))


def _pgm(noiseless: np.ndarray) -> bytes:
    ypixels, xpixels = noiseless.shape
    pixels = np.minimum(noiseless.astype(np.int64) & 0xFFFF, 255).astype(np.uint8)  # from the 16-bit image
    return f"P5\n{xpixels} {ypixels}\n# pixels scaled by 1\n255\n".encode("ascii") + pixels.tobytes()


# ------------------------------------------------------------------------------- main
def noisify_main(argv: list) -> int:
    """``braggsim noisify <noisify flags>``; returns the exit status (errors raise NoisifyError)."""
    if any(a in ("-h", "--help", "-help") for a in argv):
        print(HELP, end="")
        return 0
    from . import noise

    found, switches = split_noisify_flags(list(argv))
    if "-floatfile" not in found:
        raise NoisifyError("give the input image with -floatfile FILE (see 'braggsim noisify --help')")
    add_noise = "-nonoise" not in switches
    psf = found.get("-psf")
    if psf is not None and psf not in noise.PSF_KINDS:
        raise NoisifyError(f"flag -psf must be gauss or fiber, got {psf!r}")
    psf_radius = _number(found, "-psf_radius", 0.0, non_negative=True)
    bits = _integer(found, "-bits", 16)
    if bits not in (16, 32):
        raise NoisifyError(f"flag -bits must be 16 or 32, got {found['-bits']!r}")
    model = noise.DetectorModel(
        gain_adu_per_photon=_number(found, "-gain", 1.0, positive=True),
        adc_offset_adu=_number(found, "-adc", 40.0),
        readout_noise_adu=_number(found, "-readout_noise", 0.0, non_negative=True),
        flicker=_number(found, "-flicker", 0.0, non_negative=True),
        calibration=_number(found, "-calibration", 0.03, non_negative=True),
        psf=psf,
        psf_fwhm_um=_number(found, "-psf_fwhm", 46.0, positive=True),
        psf_radius_px=int(psf_radius),  # noisify reads it with atof into an int
        bits=bits,
    )
    seed = _integer(found, "-seed", None)
    calib_seed = _integer(found, "-calib_seed", None)
    _integer(found, "-badpix_seed", None)
    _integer(found, "-hotpix_seed", None)
    scale = _number(found, "-scale", 1.0, positive=True)
    fluence = _number(found, "-fluence", noise.NOISIFY_DEFAULT_FLUENCE, positive=True)
    pixel_mm = _number(found, "-pixel", 0.1, positive=True)
    distance_mm = _number(found, "-distance", 100.0, positive=True)
    wavelength = _number(found, "-lambda", 1.0, positive=True)
    for flag in ("-detsize", "-detsize_x", "-detsize_y"):
        _number(found, flag, 0.0, positive=True)
    header_bytes = None

    outputs = _outputs(found, add_noise)
    values = read_float_image(found["-floatfile"])
    if "-header" in found:
        header = read_header(found["-header"])
        xpixels, ypixels, guessed = header["width"], header["height"], False
        header_bytes = header["bytes"]
        if header["pixel_mm"] is not None:
            if not header["pixel_mm"] > 0:
                raise NoisifyError(f"-header {found['-header']!r}: PIXEL_SIZE must be > 0, got {header['pixel_mm']!r}")
            pixel_mm = header["pixel_mm"]
    else:
        both = _integer(found, "-detpixels", 0, non_negative=True)
        xpixels, ypixels, guessed = image_shape(
            values.size,
            _integer(found, "-detpixels_x", both, non_negative=True),
            _integer(found, "-detpixels_y", both, non_negative=True),
        )
    if xpixels * ypixels != values.size:
        raise NoisifyError(
            f"-floatfile {found['-floatfile']!r} holds {values.size} floats, but the image is "
            f"{xpixels} x {ypixels} = {xpixels * ypixels} pixels"
        )
    if guessed:
        print(f"WARNING: guessing xy pixel dimensions: {xpixels} x {ypixels} (give -detpixels_x/-detpixels_y)")
    image = values.reshape(ypixels, xpixels)
    negative = np.flatnonzero(values < 0)
    if negative.size:  # noisify warns and goes on: a negative mean draws 0 photons
        print(
            f"WARNING: {negative.size} negative intensities in {found['-floatfile']} (the first: {values[negative[0]]:g})"
        )

    pixel_m = pixel_mm / 1000.0
    detsize_x, detsize_y = pixel_m * xpixels, pixel_m * ypixels
    xbeam = _number(found, "-Xbeam", math.nan) / 1000.0
    ybeam = _number(found, "-Ybeam", math.nan) / 1000.0
    xbeam = detsize_x / 2.0 if math.isnan(xbeam) else xbeam
    ybeam = detsize_y / 2.0 if math.isnan(ybeam) else ybeam
    if header_bytes is None:
        header_bytes = noisify_header(
            bits=bits,
            xpixels=xpixels,
            ypixels=ypixels,
            pixel_m=pixel_m,
            distance_m=distance_mm / 1000.0,
            wavelength_A=wavelength,
            xbeam_m=xbeam,
            ybeam_m=ybeam,
            phi_deg=_number(found, "-phi", 0.0),
            osc_deg=_number(found, "-osc", 1.0),
        )

    _print_setup(found, model, image.shape, pixel_m, add_noise, seed, calib_seed)
    try:
        result = noise.noisify(
            image,
            pixel_size_mm=pixel_mm,
            seed=seed,
            calib_seed=calib_seed,
            model=model,
            photon_scale=scale,
            fluence=fluence,
            add_noise=add_noise,
        )
    except ValueError as exc:
        raise NoisifyError(str(exc)) from None
    _print_result(result, model, add_noise)

    dtype = "<u2" if bits == 16 else "<u4"
    contents = {}
    if outputs.get("noise") and result.counts is not None:  # counts exist whenever noise is added
        contents[outputs["noise"]] = header_bytes + result.counts.astype(dtype).tobytes()
    if outputs.get("int"):
        contents[outputs["int"]] = header_bytes + result.noiseless.astype(dtype).tobytes()
    if outputs.get("pgm"):
        contents[outputs["pgm"]] = _pgm(result.noiseless)
    _write_all(contents)
    for kind, path in outputs.items():
        print(f"wrote {path} ({'PGM' if kind == 'pgm' else f'SMV, {bits}-bit'}, {kind} image)")
    return 0


def _outputs(found: dict, add_noise: bool) -> dict:
    outputs = {}
    if add_noise:
        outputs["noise"] = found.get("-noisefile", "noiseimage.img")
    if "-intfile" in found or not add_noise:
        outputs["int"] = found.get("-intfile", "intimage.img")
    if "-pgmfile" in found:
        outputs["pgm"] = found["-pgmfile"]
    paths = list(outputs.values())
    if len({os.path.abspath(p) for p in paths}) < len(paths):
        raise NoisifyError(f"two outputs name the same file: {paths}")
    for path in paths:
        parent = Path(path).parent
        if not parent.is_dir():
            raise NoisifyError(f"cannot write {path!r}: directory {str(parent)!r} does not exist")
        if Path(path).is_dir():
            raise NoisifyError(f"cannot write {path!r}: it is a directory")
    return outputs


def _write_all(contents: dict) -> None:
    """Write every file under a temporary name, then rename them all: all or nothing."""
    pending = []
    try:
        for path, data in contents.items():
            final = Path(path)
            temporary = final.with_name(f".{final.name}.braggsim-{os.getpid()}.part")
            pending.append((temporary, final))
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for temporary, final in pending:
            os.replace(temporary, final)
    except OSError as exc:
        raise NoisifyError(f"writing output failed: {exc}") from None
    finally:
        for temporary, _ in pending:
            if temporary.exists():
                temporary.unlink()


def _print_setup(found, model, shape, pixel_m, add_noise, seed, calib_seed) -> None:
    ypixels, xpixels = shape
    print(f"noisify (braggsim) - {xpixels}x{ypixels} pixels of {pixel_m:g} m from {found['-floatfile']}")
    if model.psf is not None:
        radius = "automatic" if model.psf_radius_px == 0 else f"{model.psf_radius_px} pixels"
        print(f"  {model.psf} PSF fwhm = {model.psf_fwhm_um:g} um, rendering radius {radius}")
    if add_noise:
        print(f"  seed: {seed if seed is not None else 'from the time'}")
        print(f"  calibration noise seed: {calib_seed if calib_seed is not None else 'noisify default'}")
        print(f"  calibration_noise = {model.calibration * 100:g} %")
        print(f"  readout_noise = {model.readout_noise_adu:g} ADU")
        print(f"  flicker_noise = {model.flicker * 100:g} %")
    print(f"  quantum_gain = {model.gain_adu_per_photon:g} ADU/photon")
    print(f"  adc_offset = {model.adc_offset_adu:g} ADU")


def _print_result(result, model, add_noise: bool) -> None:
    if not add_noise:
        if result.psf_radius_px is not None:
            print(f"  PSF radius {result.psf_radius_px} pixels; added back {result.lost_photons:g} lost photons")
        return
    print(f"  seed used: {result.seed}")
    if model.psf is not None:
        print(f"{result.photons_drawn:.0f} photons on noise image before PSF")
        if result.psf_radius_px is not None:
            print(f"  PSF radius {result.psf_radius_px} pixels; added back {result.lost_photons:g} lost photons")
    print(f"{result.photons:.0f} photons on noise image ({result.overloads} overloads)")


def main(argv=None) -> int:
    """Run as ``python -m braggsim.noisify_cli``; the ``braggsim`` command dispatches here."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return noisify_main(argv)
    except NoisifyError as exc:
        print(f"braggsim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
