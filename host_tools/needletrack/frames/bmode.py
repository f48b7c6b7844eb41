"""A B-mode image model: what a linear probe shows of skin, fat, muscle and pleura, and of an in-plane needle.

Everything is built in mm and sampled on the pixel grid, so the same tissue looks the same at any image size:

- echogenicity (mean backscatter) per layer: bright skin, dark fat with bright septa, a bright fascia, muscle
  with oblique fibre striations (perimysium), a bright pleura line and the acoustic shadow of the air below it
  (with an A-line reverberation where it fits in the image);
- speckle: circular complex Gaussian scatterers blurred by an anisotropic point spread function (finer
  axially than laterally), whose magnitude is Rayleigh distributed as real speckle is; two such patterns are
  averaged, as a scanner's spatial compounding does;
- the needle: a specular reflector, far brighter than tissue, with a crisp end at the tip and a reverberation
  tail of fading copies straight below the shaft (the comet tail of a metal needle);
- log compression into 8 bits over a fixed dynamic range.

Pixel (col, row) centres sit at x = col * s, z = row * s (s mm per pixel, square pixels): row 0 is the
transducer face, column 0 the array's end on the guide side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

NEEDLE_AMPLITUDE = 10.0  # specular: ten times the pleura, the brightest tissue echo
NEEDLE_SIGMA_MM = 0.12  # shaft echo half-thickness (0.3 mm needle seen through a ~0.2 mm axial PSF)
REVERB_SPACING_MM = 0.35
REVERB_DECAY = 0.35
REVERB_COUNT = 3
# Display range: the needle shaft's centre just below full scale, so clipping does not flatten its ridge.
DB_LOW, DB_HIGH = -42.0, 20.0 * math.log10(1.25 * NEEDLE_AMPLITUDE)
PSF_AXIAL_MM, PSF_LATERAL_MM = 0.12, 0.30
COMPOUND = 2  # independent speckle patterns averaged, as spatial compounding does: fewer deep nulls


@dataclass(frozen=True)
class Tissue:
    depth_mm: float = 40.0  # imaging depth: the image height in mm
    skin_mm: float = 1.8
    fat_mm: float = 5.0
    fibre_angle_deg: float = 14.0  # muscle fibres' slope in the image (pennation)
    pleura_mm: float | None = 30.0  # None: no lung in the field


def spacing_mm(size: tuple[int, int], tissue: Tissue) -> float:
    return tissue.depth_mm / size[1]


def _band(z: np.ndarray, centre: np.ndarray | float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((z - centre) / sigma) ** 2)


def echogenicity(size: tuple[int, int], tissue: Tissue, rng: np.random.Generator) -> np.ndarray:
    """Mean backscatter amplitude per pixel (float32): ~0.01 in fat and shadow, 1 at the pleura."""
    w, h = size
    s = spacing_mm(size, tissue)
    x = (np.arange(w, dtype=np.float32) * s)[None, :]
    z = (np.arange(h, dtype=np.float32) * s)[:, None]
    width_mm = w * s
    e = np.zeros((h, w), np.float32)

    skin_end = tissue.skin_mm
    fascia = skin_end + tissue.fat_mm + 0.4 * np.sin(2 * np.pi * x / 31.0 + rng.uniform(0, 6.3))
    pleura = tissue.pleura_mm
    deep_end = pleura if pleura is not None else tissue.depth_mm + 1.0

    e += np.where(z < skin_end, 0.16, 0.0)
    e += 0.7 * _band(z, 0.15, 0.12)  # the epidermis entry echo
    fat = (z >= skin_end) & (z < fascia)
    e += np.where(fat, 0.008, 0.0)
    for _ in range(max(2, int(width_mm / 8))):  # fat septa: thin, bright, wavy, at random depths
        zc = skin_end + rng.uniform(0.2, 0.9) * tissue.fat_mm
        amp, period, phase = rng.uniform(0.2, 0.8), rng.uniform(8.0, 20.0), rng.uniform(0, 6.3)
        x0, x1 = sorted(rng.uniform(-0.2, 1.2, 2) * width_mm)
        seg = (x > x0) & (x < x1 + 4.0)
        septum = zc + amp * np.sin(2 * np.pi * x / period + phase)
        e += np.where(fat & seg, 0.25 * _band(z, septum, 0.08), 0.0)
    e += 0.55 * _band(z, fascia, 0.18)

    muscle = (z >= fascia) & (z < deep_end)
    a = math.radians(tissue.fibre_angle_deg)
    u = z * math.cos(a) - x * math.sin(a)  # across the fibres, mm
    # Perimysium: bright lines at irregular spacing across the fibres, broken up along them.
    grid = np.arange(u.min() - 2.0, u.max() + 2.0, 0.04, dtype=np.float32)
    profile = np.zeros_like(grid)
    pos = float(grid[0])
    while pos < grid[-1]:
        pos += rng.uniform(0.7, 1.8)
        profile += rng.uniform(0.4, 1.0) * np.exp(-0.5 * ((grid - pos) / 0.09) ** 2)
    stripes = np.interp(u, grid, profile).astype(np.float32)
    breakup = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 2.5 / s)
    breakup = np.clip(0.6 + breakup / (breakup.std() + 1e-6) * 0.5, 0.0, 1.2)
    e += np.where(muscle, 0.03 + 0.35 * stripes * breakup, 0.0)

    if pleura is not None:
        below = z >= pleura
        e += 1.0 * _band(z, pleura, 0.2)
        e += np.where(below, 0.0015, 0.0)  # air: the shadow
        e += 0.25 * _band(z, 2 * pleura, 0.25)  # first A-line, if it is in the image
    return e.astype(np.float32)


def speckle(size: tuple[int, int], tissue: Tissue, rng: np.random.Generator) -> np.ndarray:
    """Speckle with unit mean amplitude (Rayleigh per pattern), grain set by the PSF in mm."""
    w, h = size
    s = spacing_mm(size, tissue)
    sig = (PSF_LATERAL_MM / s, PSF_AXIAL_MM / s)
    mag = np.zeros((h, w), np.float32)
    for _ in range(COMPOUND):
        re = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sig[0], sigmaY=sig[1])
        im = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sig[0], sigmaY=sig[1])
        mag += np.sqrt(re * re + im * im)
    return (mag / mag.mean()).astype(np.float32)


def background(size: tuple[int, int], tissue: Tissue, seed: int) -> np.ndarray:
    """Tissue amplitude (float32, H x W): echogenicity times speckle. Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    return echogenicity(size, tissue, rng) * speckle(size, tissue, rng)


def add_needle(amp: np.ndarray, exit_px: tuple[float, float], tip_px: tuple[float, float],
               spacing: float) -> None:
    """Adds the needle echo, exit to tip (pixel coordinates), and its reverberation tail to ``amp``, in
    place."""
    h, w = amp.shape
    ex, ez = exit_px
    tx, tz = tip_px
    length = math.hypot(tx - ex, tz - ez)
    if length < 1e-6:
        return
    ux, uz = (tx - ex) / length, (tz - ez) / length
    sigma = NEEDLE_SIGMA_MM / spacing
    step = REVERB_SPACING_MM / spacing
    reach = 4.0 * sigma + REVERB_COUNT * step
    c0, c1 = max(math.floor(min(ex, tx) - reach), 0), min(math.ceil(max(ex, tx) + reach) + 1, w)
    r0, r1 = max(math.floor(min(ez, tz) - reach), 0), min(math.ceil(max(ez, tz) + reach) + 1, h)
    if c0 >= c1 or r0 >= r1:
        return
    cols = np.arange(c0, c1, dtype=np.float32)[None, :]
    rows = np.arange(r0, r1, dtype=np.float32)[:, None]
    patch = amp[r0:r1, c0:c1]
    for k in range(REVERB_COUNT + 1):
        dz = k * step  # reverberations appear later in time: straight down the beam
        along = (cols - ex) * ux + (rows - dz - ez) * uz
        across = (cols - ex) * -uz + (rows - dz - ez) * ux
        # Pixel-area coverage of the ends: half intensity exactly at the exit and at the tip.
        cover = np.clip(along + 0.5, 0.0, 1.0) * np.clip(length - along + 0.5, 0.0, 1.0)
        width = sigma * (1.0 + 0.1 * k)
        patch += (NEEDLE_AMPLITUDE * REVERB_DECAY**k) * cover * np.exp(-0.5 * (across / width) ** 2)


def compress(amp: np.ndarray) -> np.ndarray:
    """Log compression of amplitude into uint8 over DB_LOW .. DB_HIGH."""
    db = 20.0 * np.log10(np.maximum(amp, 1e-4))
    return np.clip((db - DB_LOW) * (255.0 / (DB_HIGH - DB_LOW)), 0, 255).astype(np.uint8)
