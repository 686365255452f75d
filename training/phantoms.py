"""Seeded procedural mammography phantoms: CC and MLO views of ONE breast, with ground-truth lesions.

No mammograms ship with any package, so tests, the demo bundles and the anomaly / super-resolution
evaluations run on these (recipe and its tests: docs/DATA.md, Phantoms). A case is one breast: both views share
the seed, the size, the outline parameters, the glandular density and the lesion plan, and each lesion
sits at about the same distance from the nipple in both views.

Images are float32 in [0, 1], bright = dense (MONOCHROME2), in standard display orientation: a left
breast has its chest wall on the left, a right breast is the mirror image (chest wall on the right).
Everything is drawn in the canonical frame (chest wall left) and mirrored at the end for R.
Lengths are given at the 256-pixel reference size and scale with ``min(H, W) / 256``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

Laterality = Literal["L", "R"]
ViewName = Literal["CC", "MLO"]
LesionKind = Literal["mass", "spiculated_mass", "calcifications"]

REFERENCE_SIDE = 256
#: Power-law exponents of the fibroglandular texture (Chen et al. 2012, Burgess 2001).
TEXTURE_BETA: dict[str, float] = {"CC": 3.17, "MLO": 3.30}
#: Physical width of the field of view in mm, used for the DICOM pixel spacing.
FIELD_OF_VIEW_MM = 220.0


@dataclass(frozen=True)
class Lesion:
    """One inserted lesion, in output-image pixel coordinates (row, col)."""

    kind: LesionKind
    center: tuple[float, float]
    diameter_px: float  # mass diameter (long axis) or calcification cluster diameter
    contrast: float  # added fraction of the dense-tissue level (masses) or absolute (calcifications)
    nipple_distance_px: float
    count: int = 1  # number of calcifications or spicules


@dataclass(frozen=True)
class PhantomView:
    view: ViewName
    laterality: Laterality
    image: np.ndarray  # float32 H x W in [0, 1]
    healthy: np.ndarray  # the same acquisition without lesions (the oracle reconstruction)
    breast_mask: np.ndarray  # bool
    lesion_mask: np.ndarray  # bool: union of mass cores and calcifications
    mass_mask: np.ndarray
    calcification_mask: np.ndarray
    pectoral_mask: np.ndarray  # bool, empty on CC
    nipple: tuple[float, float]
    lesions: tuple[Lesion, ...] = ()

    @property
    def chest_wall(self) -> Literal["left", "right"]:
        return "left" if self.laterality == "L" else "right"


@dataclass(frozen=True)
class PhantomCase:
    case_id: str
    seed: int
    laterality: Laterality
    density: float  # glandular fraction inside the breast, 0.1 (BI-RADS a) .. 0.5 (d)
    size: tuple[int, int]
    cc: PhantomView
    mlo: PhantomView
    params: dict = field(default_factory=dict, repr=False)

    @property
    def views(self) -> tuple[PhantomView, PhantomView]:
        return self.cc, self.mlo

    @property
    def pixel_spacing_mm(self) -> float:
        return FIELD_OF_VIEW_MM / max(self.size)


# ---------------------------------------------------------------------------------------------
# Shared per-breast parameters
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _LesionPlan:
    kind: LesionKind
    nipple_fraction: float  # distance from the nipple as a fraction of the breast depth
    diameter_ref: float  # at the reference size
    aspect: float
    contrast: float
    count: int
    seed: int


@dataclass(frozen=True)
class _Breast:
    depth: float  # fraction of W
    half_height: float  # fraction of H
    centre_offset: float  # fraction of H
    fourier: tuple[tuple[int, float, float], ...]  # (order, amplitude, phase) radius perturbation
    density: float
    fat_level: float
    dense_level: float
    mlo_tilt_deg: float
    pectoral_width: float  # fraction of W at the top
    pectoral_height: float  # fraction of H down the chest wall
    pectoral_brightness: float  # fraction of the dense level
    lesions: tuple[_LesionPlan, ...]


def _sample_breast(rng: np.random.Generator, density: float | None, lesions: bool) -> _Breast:
    orders = (2, 3, 4, 5)
    amps = rng.uniform(0.3, 1.0, len(orders))
    amps = amps / amps.sum() * rng.uniform(0.02, 0.05)
    fourier = tuple((k, float(a), float(rng.uniform(0, 2 * math.pi))) for k, a in zip(orders, amps, strict=True))
    plans: list[_LesionPlan] = []
    if lesions:
        n_masses = int(rng.integers(1, 3))
        for _ in range(n_masses):
            kind: LesionKind = "spiculated_mass" if rng.random() < 0.4 else "mass"
            plans.append(
                _LesionPlan(
                    kind=kind,
                    nipple_fraction=float(rng.uniform(0.25, 0.65)),
                    diameter_ref=float(rng.uniform(8, 30)),
                    aspect=float(rng.uniform(0.6, 1.0)),
                    contrast=float(rng.uniform(0.05, 0.15)),
                    count=int(rng.integers(5, 21)) if kind == "spiculated_mass" else 1,
                    seed=int(rng.integers(2**31)),
                )
            )
        if rng.random() < 0.7:
            plans.append(
                _LesionPlan(
                    kind="calcifications",
                    nipple_fraction=float(rng.uniform(0.2, 0.6)),
                    diameter_ref=float(rng.uniform(7, 12)),
                    aspect=1.0,
                    contrast=float(rng.uniform(0.2, 0.35)),
                    count=int(rng.integers(4, 9)),
                    seed=int(rng.integers(2**31)),
                )
            )
    return _Breast(
        depth=float(rng.uniform(0.55, 0.75)),
        half_height=float(rng.uniform(0.35, 0.48)),
        centre_offset=float(rng.uniform(-0.04, 0.04)),
        fourier=fourier,
        density=float(rng.uniform(0.1, 0.5)) if density is None else float(density),
        fat_level=float(rng.uniform(0.30, 0.38)),
        dense_level=float(rng.uniform(0.70, 0.80)),
        mlo_tilt_deg=float(rng.uniform(10, 22)),
        pectoral_width=float(rng.uniform(0.25, 0.45)),
        pectoral_height=float(rng.uniform(0.40, 0.70)),
        pectoral_brightness=float(rng.uniform(0.70, 0.90)),
        lesions=tuple(plans),
    )


# ---------------------------------------------------------------------------------------------
# Building blocks (canonical frame: chest wall at column 0)
# ---------------------------------------------------------------------------------------------
def power_law_noise(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum P(f) ~ f**-beta, zero mean and unit variance."""
    h, w = shape
    white = rng.standard_normal((h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = np.inf
    field_ = np.fft.irfft2(np.fft.rfft2(white) * f ** (-beta / 2.0), s=(h, w))
    field_ -= field_.mean()
    std = field_.std()
    return (field_ / std if std > 0 else field_).astype(np.float32)


def _outline(b: _Breast, view: ViewName, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, tuple, tuple]:
    """Breast mask, normalized radius (0 at the chest-wall centre, 1 at the skin), nipple, axis."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if view == "CC":
        cy, a, bb, tilt = h * (0.5 + b.centre_offset), b.depth * w, b.half_height * h, 0.0
    else:
        cy = h * (0.52 + b.centre_offset)
        a, bb, tilt = min(b.depth * 1.05, 0.8) * w, min(b.half_height * 1.12, 0.5) * h, math.radians(b.mlo_tilt_deg)
    cos_t, sin_t = math.cos(tilt), math.sin(tilt)
    u = xx * cos_t + (yy - cy) * sin_t  # along the nipple axis
    v = -xx * sin_t + (yy - cy) * cos_t
    theta = np.arctan2(v / bb, u / a)
    radius = np.ones_like(theta)
    for k, amp, phase in b.fourier:
        radius += amp * np.cos(k * theta + phase)
    rho = np.sqrt((u / a) ** 2 + (v / bb) ** 2) / radius
    mask = (rho < 1.0) & (xx >= 0)
    r0 = 1.0 + sum(amp * math.cos(phase) for _, amp, phase in b.fourier)
    nipple = (cy + a * r0 * sin_t, a * r0 * cos_t)
    return mask, rho, nipple, (cos_t, sin_t)


def _pectoral(b: _Breast, shape: tuple[int, int]) -> np.ndarray:
    """Near-straight, slightly convex triangle in the upper chest-wall corner (MLO only)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    px, py = xx / (b.pectoral_width * w), yy / (b.pectoral_height * h)
    return (px + py) < 1.0 + 0.25 * px * py


def _voronoi_edges(mask: np.ndarray, cell_px: float, keep: float, rng: np.random.Generator) -> np.ndarray:
    """A random subset of Voronoi cell edges inside the mask: Cooper's ligaments."""
    h, w = mask.shape
    n = max(4, int(mask.sum() / cell_px**2))
    ys, xs = np.nonzero(mask)
    pick = rng.integers(0, ys.size, n)
    seeds = np.ones(mask.shape, bool)
    seeds[ys[pick], xs[pick]] = False
    _, (iy, ix) = ndimage.distance_transform_edt(seeds, return_indices=True)
    labels = iy * w + ix
    edge = np.zeros(mask.shape, bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    kept_label = np.zeros(h * w, bool)
    kept_label[ys[pick] * w + xs[pick]] = rng.random(n) < keep
    return edge & kept_label[labels] & mask


def _place(
    plan: _LesionPlan,
    nipple: tuple[float, float],
    axis: tuple[float, float],
    inner: np.ndarray,
    depth_px: float,
    rng: np.random.Generator,
) -> tuple[float, float] | None:
    """A centre at the planned distance from the nipple, inside the (eroded) breast."""
    distance = plan.nipple_fraction * depth_px
    back = math.atan2(-axis[1], -axis[0])  # from the nipple towards the chest wall
    for _ in range(64):
        ang = back + rng.uniform(-1.0, 1.0)
        r, c = nipple[0] + distance * math.sin(ang), nipple[1] + distance * math.cos(ang)
        ri, ci = round(r), round(c)
        if 0 <= ri < inner.shape[0] and 0 <= ci < inner.shape[1] and inner[ri, ci]:
            return r, c
        distance *= 0.97
    return None


def _mass(
    shape: tuple[int, int], centre: tuple[float, float], plan: _LesionPlan, scale: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(profile in [0, 1] with blurred edge and spicules, ground-truth core mask)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ra = plan.diameter_ref * scale / 2.0
    rb = ra * plan.aspect
    ang = rng.uniform(0, math.pi)
    dy, dx = yy - centre[0], xx - centre[1]
    u = dx * math.cos(ang) + dy * math.sin(ang)
    v = -dx * math.sin(ang) + dy * math.cos(ang)
    # A lobulated outline: the radius wobbles a little with angle.
    phi = np.arctan2(v / rb, u / ra)
    wobble = 1.0 + 0.08 * np.cos(3 * phi + rng.uniform(0, 6.28)) + 0.05 * np.cos(5 * phi + rng.uniform(0, 6.28))
    core = np.sqrt((u / ra) ** 2 + (v / rb) ** 2) <= wobble
    profile = ndimage.gaussian_filter(core.astype(np.float64), sigma=rng.uniform(1.0, 3.0) * scale)
    if plan.kind == "spiculated_mass":
        lines = np.zeros(shape, np.float64)
        for k in range(plan.count):
            theta = 2 * math.pi * k / plan.count + rng.uniform(-0.3, 0.3)
            length = rng.uniform(5, 15) * scale + ra
            for t in np.linspace(ra * 0.8, length, int(length * 2) + 2):
                r, c = round(centre[0] + t * math.sin(theta)), round(centre[1] + t * math.cos(theta))
                if 0 <= r < h and 0 <= c < w:
                    lines[r, c] = max(lines[r, c], 1.0 - 0.6 * (t - ra) / max(length - ra, 1e-6))
        lines = ndimage.gaussian_filter(lines, sigma=0.7 * scale)
        peak = lines.max()
        if peak > 0:
            profile = np.maximum(profile, 0.7 * lines / peak)
    return profile, core


def _calcifications(
    shape: tuple[int, int], centre: tuple[float, float], plan: _LesionPlan, scale: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Clustered 1-2 px bright dots: (intensity profile, mask of the dots)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    profile = np.zeros(shape, np.float64)
    radius = plan.diameter_ref * scale / 2.0
    for _ in range(plan.count):
        r, t = radius * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
        cy, cx = centre[0] + r * math.sin(t), centre[1] + r * math.cos(t)
        size = rng.uniform(0.5, 1.0) * scale
        profile = np.maximum(profile, ((yy - cy) ** 2 + (xx - cx) ** 2 <= size**2).astype(np.float64))
        profile[int(np.clip(round(cy), 0, h - 1)), int(np.clip(round(cx), 0, w - 1))] = 1.0
    mask = ndimage.binary_dilation(profile > 0, iterations=1)
    return profile, mask


# ---------------------------------------------------------------------------------------------
def _render(b: _Breast, view: ViewName, shape: tuple[int, int], seed: int, with_lesions: bool) -> dict:
    """One view in the canonical frame. Returns arrays and lesions (canonical coordinates)."""
    h, w = shape
    scale = min(h, w) / REFERENCE_SIDE
    rng = np.random.default_rng([seed, 1 if view == "CC" else 2])
    mask, rho, nipple, axis = _outline(b, view, shape)
    pectoral = np.zeros(shape, bool)
    if view == "MLO":
        pectoral = _pectoral(b, shape)
        tail = _pectoral(
            _Breast(**{**b.__dict__, "pectoral_width": b.pectoral_width * 1.3, "pectoral_height": b.pectoral_height}),
            shape,
        )
        # The axillary tail joins the oblique ellipse without a notch: the hull of the two, then
        # the ellipse's own (non-convex) wobble is kept where it lies outside the hull's smoothing.
        mask = convex_hull_image(mask | tail)
        mask = ndimage.gaussian_filter(mask.astype(np.float32), 2.0 * scale) > 0.5
        pectoral &= mask
    dist = ndimage.distance_transform_edt(mask)
    rim = 0.07 * min(h, w)
    thickness = np.sqrt(1.0 - (1.0 - np.minimum(dist / rim, 1.0)) ** 2)  # compressed-breast falloff
    # Fibroglandular tissue: power-law texture weighted by a central / subareolar envelope.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    texture = power_law_noise(shape, TEXTURE_BETA[view], rng)
    v_axis = (-(xx - 0) * axis[1] + (yy - nipple[0]) * axis[0]) / (b.half_height * h)
    envelope = np.exp(-(((np.clip(rho, 0, 2) - 0.55) / 0.32) ** 2)) * np.exp(-((v_axis / 0.75) ** 2))
    g = 0.9 * texture + 1.8 * envelope
    inside = mask & ~pectoral
    threshold = np.quantile(g[inside], 1.0 - b.density) if inside.any() else 0.0
    dense = 1.0 / (1.0 + np.exp(-(g - threshold) / 0.35))
    # Strands and lobules inside the dense tissue, finer mottle in the fat.
    strands = power_law_noise(shape, 2.2, rng)
    tissue = b.fat_level + (b.dense_level - b.fat_level) * dense * (1.0 + 0.12 * strands) + 0.02 * strands
    # Cooper's ligaments: thin bright arcs in the fat.
    ligaments = _voronoi_edges(inside & (dist > 2 * scale), 18 * scale, 0.3, rng).astype(np.float64)
    ligaments = ndimage.gaussian_filter(ligaments, 0.7 * scale)
    if ligaments.max() > 0:
        ligaments /= ligaments.max()
    tissue = tissue + rng.uniform(0.05, 0.10) * b.dense_level * ligaments * (1.0 - 0.7 * dense)
    if view == "MLO":
        corner = np.clip(1.0 - xx / (b.pectoral_width * w) - yy / (b.pectoral_height * h), 0.0, 1.0)
        muscle = b.pectoral_brightness * b.dense_level * (0.93 + 0.1 * corner) + 0.02 * power_law_noise(shape, 2.5, rng)
        blend = ndimage.gaussian_filter(pectoral.astype(np.float64), 1.0 * scale)
        tissue = tissue * (1 - blend) + muscle * blend
    # Skin line: a thin brighter band along the skin (not along the chest wall / image border).
    skin = np.exp(-dist / (2.0 * scale)) * mask
    signal = (tissue * thickness + 0.10 * skin) * mask
    healthy_signal = signal.copy()

    mass_mask = np.zeros(shape, bool)
    calc_mask = np.zeros(shape, bool)
    lesions: list[Lesion] = []
    if with_lesions and b.lesions:
        inner = ndimage.binary_erosion(inside, iterations=max(1, int(12 * scale)))
        depth_px = b.depth * w
        for plan in b.lesions:
            lrng = np.random.default_rng([plan.seed, 1 if view == "CC" else 2])
            centre = _place(plan, nipple, axis, inner, depth_px, lrng)
            if centre is None:
                continue
            if plan.kind == "calcifications":
                profile, lmask = _calcifications(shape, centre, plan, scale, lrng)
                signal = signal + plan.contrast * profile * mask
                calc_mask |= lmask & mask
            else:
                profile, core = _mass(shape, centre, plan, scale, lrng)
                signal = signal + plan.contrast * b.dense_level * profile * thickness * mask
                mass_mask |= core & mask
            d = math.hypot(centre[0] - nipple[0], centre[1] - nipple[1])
            lesions.append(
                Lesion(plan.kind, centre, plan.diameter_ref * scale, plan.contrast, d, plan.count)  # type: ignore[arg-type]
            )
    # Acquisition: detector blur, then quantum noise (signal dependent), on a faint background.
    noise = rng.standard_normal(shape)
    out = []
    for s in (signal, healthy_signal):
        blurred = ndimage.gaussian_filter(s + 0.02, 0.5 * scale)
        out.append(np.clip(blurred + 0.012 * np.sqrt(blurred) * noise, 0.0, 1.0).astype(np.float32))
    return {
        "image": out[0],
        "healthy": out[1],
        "breast_mask": mask,
        "mass_mask": mass_mask,
        "calcification_mask": calc_mask,
        "pectoral_mask": pectoral,
        "nipple": nipple,
        "lesions": lesions,
    }


def _mirror(view: dict, width: int) -> dict:
    out = {k: (np.ascontiguousarray(v[:, ::-1]) if isinstance(v, np.ndarray) else v) for k, v in view.items()}
    out["nipple"] = (view["nipple"][0], width - 1 - view["nipple"][1])
    out["lesions"] = [
        Lesion(
            les.kind,
            (les.center[0], width - 1 - les.center[1]),
            les.diameter_px,
            les.contrast,
            les.nipple_distance_px,
            les.count,
        )
        for les in view["lesions"]
    ]
    return out


def make_phantom_case(
    seed: int,
    size: tuple[int, int] = (256, 256),
    *,
    lesions: bool = False,
    laterality: Laterality | None = None,
    density: float | None = None,
    case_id: str | None = None,
) -> PhantomCase:
    """CC and MLO of one breast, deterministic in (seed, size, lesions, laterality, density)."""
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"phantoms need at least 32x32 pixels, got {h}x{w}")
    if density is not None and not 0.05 <= density <= 0.7:
        raise ValueError(f"density (glandular fraction) must be in [0.05, 0.7], got {density}")
    rng = np.random.default_rng(seed)
    lat: Laterality = laterality or ("L" if rng.random() < 0.5 else "R")
    breast = _sample_breast(rng, density, lesions)
    views = {}
    for view in ("CC", "MLO"):
        parts = _render(breast, view, (h, w), seed, lesions)  # type: ignore[arg-type]
        if lat == "R":
            parts = _mirror(parts, w)
        views[view] = PhantomView(
            view=view,  # type: ignore[arg-type]
            laterality=lat,
            image=parts["image"],
            healthy=parts["healthy"],
            breast_mask=parts["breast_mask"],
            lesion_mask=parts["mass_mask"] | parts["calcification_mask"],
            mass_mask=parts["mass_mask"],
            calcification_mask=parts["calcification_mask"],
            pectoral_mask=parts["pectoral_mask"],
            nipple=parts["nipple"],
            lesions=tuple(parts["lesions"]),
        )
    return PhantomCase(
        case_id=case_id or f"phantom-{seed:06d}",
        seed=seed,
        laterality=lat,
        density=breast.density,
        size=(h, w),
        cc=views["CC"],
        mlo=views["MLO"],
        params={k: v for k, v in breast.__dict__.items() if k != "lesions"},
    )
