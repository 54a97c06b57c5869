"""The knee as a tissue label map, built in millimetres from smooth implicit shapes.

Frame: the canonical MRI frame of :mod:`xray2mri.transforms.geometry` ("PIL"): ``a`` runs
anterior -> posterior, ``s`` superior -> inferior, ``l`` the patient's right -> left, in mm,
origin at the knee centre (the middle of the joint line). The anatomy is written for a
RIGHT knee (lateral = -l, medial = +l); a left knee is its mirror image along ``l``.

Each bone is a signed-distance-like function (negative inside) composed with smooth unions:

- femur: shaft, flared metaphysis, medial and lateral condyles (rounded cylinders along
  ``l``, circular in the sagittal plane), trochlea with its groove, intercondylar notch;
- tibia: elliptic cross-section tapering from the plateau to the shaft, plateau top as a
  height field (posterior slope, one height per compartment, tibial spines), tuberosity;
- fibular head and neck (lateral, posterior), patella (anterior, on the trochlea);
- cartilage as shells on the articular surfaces, menisci as peripheral wedges, joint
  fluid around the cartilage and in the suprapatellar recess, tendons, Hoffa's and popliteal
  fat, muscle, subcutaneous fat and skin inside an egg-shaped limb, air outside.

The joint space width (JSW) of each compartment is a parameter: the minimal superior-inferior
gap between femoral condyle bone and tibial plateau bone in that compartment equals
``jsw_medial_mm`` / ``jsw_lateral_mm`` (cartilage of both surfaces plus a fluid film fills
it). The Kellgren-Lawrence grade drives medial > lateral narrowing, cartilage thinning,
marginal osteophytes, subchondral sclerosis, effusion and varus alignment.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from xray2mri.pipeline.data.synth.tissues import LABEL

#: KL grade -> (mean medial JSW, mean lateral JSW) in mm (medial narrows first).
JSW_BY_GRADE: dict[int, tuple[float, float]] = {
    0: (5.0, 6.0),
    1: (4.5, 5.9),
    2: (3.6, 5.6),
    3: (2.4, 5.2),
    4: (1.0, 4.7),
}
#: KL grade -> (osteophyte size mm, subchondral sclerosis depth mm).
OA_BY_GRADE: dict[int, tuple[float, float]] = {0: (0.0, 0.0), 1: (1.5, 0.0), 2: (3.0, 3.0), 3: (4.5, 5.0), 4: (6.5, 7.0)}
#: Share of subjects per KL grade when the grade is drawn (more balanced than a clinic).
GRADE_PROBS: tuple[float, ...] = (0.3, 0.2, 0.25, 0.15, 0.1)


@dataclass(frozen=True)
class KneeParams:
    """Every random parameter of one synthetic knee (lengths in mm, angles in degrees)."""

    side: str
    grade: int
    scale: float
    jsw_medial_mm: float
    jsw_lateral_mm: float
    femoral_cartilage_share: float
    fluid_film_mm: float
    trochlear_cartilage_mm: float
    patellar_cartilage_mm: float
    condyle_radius_medial: float
    condyle_radius_lateral: float
    condyle_halfwidth_medial: float
    condyle_halfwidth_lateral: float
    condyle_offset_medial: float
    condyle_offset_lateral: float
    condyle_ap: float
    plateau_ap_radius: float
    plateau_ml_radius: float
    tibial_slope_deg: float
    flexion_deg: float
    rotation_deg: float
    varus_deg: float
    femoral_shaft_angle_deg: float
    patella_height: float
    patella_size: float
    fat_mm: float
    limb_scale: float
    effusion: float
    osteophyte_mm: float
    sclerosis_mm: float
    meniscal_extrusion_mm: float

    def to_dict(self) -> dict:
        """JSON-ready copy, floats rounded to 4 decimals."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> KneeParams:
        """Inverse of :meth:`to_dict` (ignores unknown keys)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def draw_params(rng: np.random.Generator, grade: int | None = None, side: str | None = None) -> KneeParams:
    """Draw one plausible knee; ``grade`` (KL 0-4) and ``side`` ("L"/"R") may be forced."""
    if grade is None:
        grade = int(rng.choice(len(GRADE_PROBS), p=GRADE_PROBS))
    if not 0 <= grade <= 4:
        raise ValueError(f"KL grade must be 0..4, got {grade}")
    if side is None:
        side = "R" if rng.random() < 0.5 else "L"
    if side not in ("L", "R"):
        raise ValueError(f"side must be 'L' or 'R', got {side!r}")
    sc = float(np.clip(rng.normal(1.0, 0.06), 0.86, 1.14))
    jm, jl = JSW_BY_GRADE[grade]
    jsw_m = float(np.clip(rng.normal(jm, 0.35), 0.4, 7.0))
    jsw_l = float(np.clip(rng.normal(jl, 0.35), max(jsw_m, 2.5), 8.0))
    ost, scl = OA_BY_GRADE[grade]
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    return KneeParams(
        side=side,
        grade=grade,
        scale=sc,
        jsw_medial_mm=jsw_m,
        jsw_lateral_mm=jsw_l,
        femoral_cartilage_share=u(0.45, 0.55),
        fluid_film_mm=u(0.15, 0.35),
        trochlear_cartilage_mm=u(2.3, 2.9) * (1 - 0.12 * grade),
        patellar_cartilage_mm=u(2.9, 3.6) * (1 - 0.12 * grade),
        condyle_radius_medial=22.0 * sc * u(0.95, 1.05),
        condyle_radius_lateral=20.0 * sc * u(0.95, 1.05),
        condyle_halfwidth_medial=13.0 * sc * u(0.93, 1.07),
        condyle_halfwidth_lateral=12.0 * sc * u(0.93, 1.07),
        condyle_offset_medial=20.5 * sc * u(0.96, 1.04),
        condyle_offset_lateral=21.0 * sc * u(0.96, 1.04),
        condyle_ap=6.0 * sc + u(-1.5, 1.5),
        plateau_ap_radius=25.0 * sc * u(0.95, 1.05),
        plateau_ml_radius=38.0 * sc * u(0.96, 1.04),
        tibial_slope_deg=u(3.0, 9.0),
        flexion_deg=u(0.0, 12.0),
        rotation_deg=u(-6.0, 6.0),
        varus_deg=float(rng.normal(0.0, 1.5)) + 1.2 * grade,
        femoral_shaft_angle_deg=u(4.0, 7.0),
        patella_height=u(-4.0, 4.0),
        patella_size=u(0.92, 1.08),
        fat_mm=u(4.0, 14.0),
        limb_scale=u(0.95, 1.08),
        effusion=u(0.0, 0.3) + 0.15 * grade,
        osteophyte_mm=ost * u(0.7, 1.3),
        sclerosis_mm=scl * u(0.8, 1.2),
        meniscal_extrusion_mm=0.8 * grade * u(0.5, 1.5),
    )


# ----------------------------------------------------------------------------- shape helpers
def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (smooth union of two distance fields), blend radius k mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth maximum (smooth intersection)."""
    return -_smin(-a, -b, k)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, C1 in between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _ellipsoid(a, s, lr, c, r) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipsoid, centre c, radii r (mm)."""
    q = np.sqrt(((a - c[0]) / r[0]) ** 2 + ((s - c[1]) / r[1]) ** 2 + ((lr - c[2]) / r[2]) ** 2)
    return (q - 1.0) * min(r)


def _rounded_cylinder_l(a, s, lr, ac, sc, lc, radius, halfwidth, rounding) -> np.ndarray:
    """Signed distance to a cylinder along ``l`` with rounded rims (a femoral condyle)."""
    dx = np.sqrt((a - ac) ** 2 + (s - sc) ** 2) - radius + rounding
    dy = np.abs(lr - lc) - halfwidth + rounding
    return np.sqrt(np.maximum(dx, 0) ** 2 + np.maximum(dy, 0) ** 2) + np.minimum(np.maximum(dx, dy), 0) - rounding


def _segment_dist_2d(x, y, p0, p1) -> np.ndarray:
    """Distance in the (x, y) plane to the segment p0-p1."""
    vx, vy = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((x - p0[0]) * vx + (y - p0[1]) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    return np.sqrt((x - p0[0] - t * vx) ** 2 + (y - p0[1] - t * vy) ** 2)


# ----------------------------------------------------------------------------- derived geometry
@dataclass(frozen=True)
class KneeGeometry:
    """Positions derived from the parameters, in the right-knee frame (before mirroring/rotation)."""

    cart_femur_medial: float
    cart_femur_lateral: float
    cart_tibia_medial: float
    cart_tibia_lateral: float
    condyle_s_medial: float  # sagittal centre of the condyle circle along s
    condyle_s_lateral: float
    plateau_h_medial: float  # plateau top (s) at and anterior of the contact
    plateau_h_lateral: float
    slope: float  # tan(posterior slope)

    @classmethod
    def from_params(cls, p: KneeParams) -> KneeGeometry:
        """Place condyles and plateaus so that the minimal bone gap equals the JSW parameters."""
        t = math.tan(math.radians(p.tibial_slope_deg))
        carts = []
        for jsw in (p.jsw_medial_mm, p.jsw_lateral_mm):
            total = max(jsw - p.fluid_film_mm, 0.0)
            carts.append((total * p.femoral_cartilage_share, total * (1 - p.femoral_cartilage_share)))
        rm, rl = p.condyle_radius_medial, p.condyle_radius_lateral
        # condyle circle bottom at -jsw/2 above a plateau flat anterior of the contact and sloping
        # down posterior of it: the minimal gap (at the contact) is exactly jsw.
        return cls(
            cart_femur_medial=carts[0][0],
            cart_femur_lateral=carts[1][0],
            cart_tibia_medial=carts[0][1],
            cart_tibia_lateral=carts[1][1],
            condyle_s_medial=-p.jsw_medial_mm / 2 - rm,
            condyle_s_lateral=-p.jsw_lateral_mm / 2 - rl,
            plateau_h_medial=p.jsw_medial_mm / 2,
            plateau_h_lateral=p.jsw_lateral_mm / 2,
            slope=t,
        )


def true_readings(p: KneeParams | dict) -> dict[str, float]:
    """The generator's truth of the clinical readings of one knee (mm), by the readings' names
    (:mod:`xray2mri.pipeline.evaluation.readings`): minimum JSW and tibial (``cartilage_thickness_*``) and
    femoral cartilage thickness at the contact of each compartment. ``p`` may be the meta JSON's ``params``.
    """
    if isinstance(p, dict):
        p = KneeParams.from_dict(p)
    g = KneeGeometry.from_params(p)
    return {
        "jsw_medial_mm": p.jsw_medial_mm,
        "jsw_lateral_mm": p.jsw_lateral_mm,
        "cartilage_thickness_medial_mm": g.cart_tibia_medial,
        "cartilage_thickness_lateral_mm": g.cart_tibia_lateral,
        "femoral_cartilage_mean_medial_mm": g.cart_femur_medial,
        "femoral_cartilage_mean_lateral_mm": g.cart_femur_lateral,
    }


def compartment_centres(p: KneeParams) -> dict[str, tuple[float, float, float]]:
    """Joint-line contact point of each compartment, (a, s, l) mm in the canonical frame.

    Includes the subject's rotation about the long axis and the mirroring of a left knee,
    so these are positions in the canonical array's frame centred on the knee.
    """
    g = math.radians(p.rotation_deg)
    out = {}
    for name, lc in (
        ("medial", p.condyle_offset_medial),
        ("lateral", -p.condyle_offset_lateral),
    ):
        a0, l0 = p.condyle_ap, lc
        # canonical (a, l) = R(g) applied to the right-knee-frame point (inverse of the rotation in _Knee.labels)
        a = math.cos(g) * a0 + math.sin(g) * l0
        lr = -math.sin(g) * a0 + math.cos(g) * l0
        if p.side == "L":
            lr = -lr
        out[name] = (a, 0.0, lr)  # the mid-gap of the contact lies on s = 0 by construction
    return out


def compartment_halfwidths(p: KneeParams) -> dict[str, float]:
    """Half-width (mm, along l) of the flat contact region of each condyle."""
    return {
        "medial": p.condyle_halfwidth_medial - _ROUNDING,
        "lateral": p.condyle_halfwidth_lateral - _ROUNDING,
    }


_ROUNDING = 8.0  # rim rounding of the condyles (round in the coronal and axial planes), mm


# ----------------------------------------------------------------------------- rendering
def render_labels(p: KneeParams, a: np.ndarray, s: np.ndarray, lr: np.ndarray, chunk: int = 16) -> np.ndarray:
    """Label map (uint8, shape (len(a), len(s), len(lr))) sampled at the given coordinates.

    Args:
        p: the subject.
        a, s, lr: 1-D coordinates in mm (canonical frame, knee centre at 0) of the sample
            points along A->P, S->I and R->L; any spacing, any sub-region.
        chunk: number of ``a`` positions evaluated at once (bounds memory).
    """
    a = np.asarray(a, dtype=np.float32)
    s = np.asarray(s, dtype=np.float32)
    lr = np.asarray(lr, dtype=np.float32)
    out = np.empty((a.size, s.size, lr.size), dtype=np.uint8)
    knee = _Knee(p)
    for i0 in range(0, a.size, chunk):
        out[i0 : i0 + chunk] = knee.labels(a[i0 : i0 + chunk], s, lr)
    return out


class _Knee:
    """Evaluates the implicit shapes of one subject on a block of points."""

    def __init__(self, p: KneeParams) -> None:
        self.p = p
        self.g = KneeGeometry.from_params(p)

    def labels(self, a1: np.ndarray, s1: np.ndarray, l1: np.ndarray) -> np.ndarray:  # noqa: C901
        p, g, sc = self.p, self.g, self.p.scale
        f32 = np.float32
        A0 = a1[:, None, None]
        S = s1[None, :, None]
        L0 = l1[None, None, :]
        if p.side == "L":
            L0 = -L0
        gam = math.radians(p.rotation_deg)
        A = f32(math.cos(gam)) * A0 - f32(math.sin(gam)) * L0
        L = f32(math.sin(gam)) * A0 + f32(math.cos(gam)) * L0
        shape = (a1.size, s1.size, l1.size)

        # femur: flexed frame about the condyle centres
        th = math.radians(p.flexion_deg)
        piv_a, piv_s = p.condyle_ap, 0.5 * (g.condyle_s_medial + g.condyle_s_lateral)
        da, ds = A - piv_a, S - piv_s
        Af = piv_a + math.cos(th) * da - math.sin(th) * ds
        Sf = piv_s + math.sin(th) * da + math.cos(th) * ds
        Lf = L - math.tan(math.radians(p.femoral_shaft_angle_deg - p.varus_deg / 2)) * np.minimum(Sf + 30 * sc, 0)
        rm, rl = p.condyle_radius_medial, p.condyle_radius_lateral
        lm, ll = p.condyle_offset_medial, -p.condyle_offset_lateral
        cond_m = _rounded_cylinder_l(A, S, L, p.condyle_ap, g.condyle_s_medial, lm, rm, p.condyle_halfwidth_medial, _ROUNDING)
        cond_l = _rounded_cylinder_l(A, S, L, p.condyle_ap, g.condyle_s_lateral, ll, rl, p.condyle_halfwidth_lateral, _ROUNDING)
        # metaphysis flaring from the shaft (r ~13 mm) to the epicondyles, capped above the condyles
        v = _smoothstep((Sf + 110 * sc) / (90 * sc))
        ra_f = 13 * sc + 11 * sc * v
        rl_f = 13 * sc + 21 * sc * v
        body = (np.sqrt(((Af + 3 * sc * (1 - v)) / ra_f) ** 2 + (Lf / rl_f) ** 2) - 1.0) * np.minimum(ra_f, rl_f)
        body = _smax(body, Sf + 14 * sc, 6.0)
        troch = _ellipsoid(Af, Sf, L, (-10 * sc, -22 * sc, 0.0), (20 * sc, 20 * sc, 26 * sc))
        # whatever the flexion, only the condyles reach down to the joint space
        s_cap = -max(p.jsw_medial_mm, p.jsw_lateral_mm) / 2 - 7.0  # > the 6 mm blend: no bulge at the contact
        rest = _smax(_smin(body, troch, 6.0), S - s_cap, 3.0)
        femur = _smin(_smin(rest, cond_m, 6.0), cond_l, 6.0)
        groove = np.sqrt(_segment_dist_2d(Af, Sf, (-33 * sc, -50 * sc), (-29 * sc, -8 * sc)) ** 2 + (L + 3 * sc) ** 2) - 8 * sc
        notch = _ellipsoid(A, S, L, (16 * sc, -4 * sc, 0.0), (18 * sc, 16 * sc, 8 * sc))
        femur = np.maximum(np.maximum(femur, -groove), -notch)
        ost = p.osteophyte_mm
        if ost > 0:
            for lc, hw, sc_c, r, k in (
                (lm, p.condyle_halfwidth_medial, g.condyle_s_medial, rm, 1.0),
                (ll, -p.condyle_halfwidth_lateral, g.condyle_s_lateral, rl, 0.6),
            ):
                # marginal spur on the outer rim of the condyle, above the joint line
                o = ost * k
                bump = _ellipsoid(A, S, L, (p.condyle_ap, sc_c + 0.45 * r, lc + hw), (o, 1.2 * o, o))
                femur = _smin(femur, bump, 3.0)

        # tibia: plateau height field over an elliptic cross-section tapering to the shaft
        step = _smoothstep((L + 6 * sc) / (12 * sc))
        H = g.plateau_h_lateral * (1 - step) + g.plateau_h_medial * step + g.slope * np.maximum(A - p.condyle_ap, 0)
        spine = 6 * sc * (np.exp(-(((L - 4 * sc) / (3 * sc)) ** 2)) + np.exp(-(((L + 4 * sc) / (3 * sc)) ** 2)))
        H = H - spine * np.exp(-(((A - 2 * sc) / (9 * sc)) ** 2))
        u = _smoothstep((S - 8 * sc) / (62 * sc))
        ra_t = p.plateau_ap_radius + (14 * sc - p.plateau_ap_radius) * u
        rl_t = p.plateau_ml_radius + (15 * sc - p.plateau_ml_radius) * u
        ac_t = 2 * sc - 6 * sc * u
        Lt = L - math.tan(math.radians(p.varus_deg / 2)) * np.maximum(S - 20 * sc, 0)
        ell = (np.sqrt(((A - ac_t) / ra_t) ** 2 + (Lt / rl_t) ** 2) - 1.0) * np.minimum(ra_t, rl_t)
        tibia = _smax(ell, H - S, 3.5)
        tibia = _smin(tibia, _ellipsoid(A, S, L, (-20 * sc, 33 * sc, -2 * sc), (7 * sc, 13 * sc, 11 * sc)), 4.0)
        if ost > 0:
            for lc, k, h in ((p.plateau_ml_radius, 1.0, g.plateau_h_medial), (-p.plateau_ml_radius, 0.6, g.plateau_h_lateral)):
                # marginal spur: at the rim, growing outwards and upwards, outside the contact area
                bump = _ellipsoid(A, S, L, (2 * sc, h + 0.3 * ost * k, lc), (ost * k, ost * k, ost * k))
                tibia = _smin(tibia, bump, 3.0)

        fib_head = _ellipsoid(A, S, L, (15 * sc, 26 * sc, -35 * sc), (10 * sc, 12 * sc, 10 * sc))
        fib_shaft = np.maximum(np.sqrt((A - 15 * sc) ** 2 + (L + 35 * sc + 0.03 * (S - 26 * sc)) ** 2) - 7 * sc, 26 * sc - S)
        fibula = _smin(fib_head, fib_shaft, 4.0)

        ps = p.patella_size * sc
        pc = (-44 * sc, -30 * sc + p.patella_height, -1 * sc)
        patella = _ellipsoid(Af, Sf, L, pc, (10 * ps, 23 * ps, 21 * ps))

        # soft tissue: egg-shaped limb, thicker thigh above, calf below
        ls = sc * p.limb_scale
        fat = p.fat_mm
        ra_limb = np.where(A < 2 * ls, 55 * ls + 0.5 * fat, 60 * ls + fat + 0.15 * np.maximum(S - 30, 0))
        rl_limb = 50 * ls + fat + 0.12 * np.maximum(-S - 20, 0)
        limb = (np.sqrt(((A - 2 * ls) / ra_limb) ** 2 + (L / rl_limb) ** 2) - 1.0) * np.minimum(ra_limb, rl_limb)

        lab = np.zeros(shape, dtype=np.uint8)
        inside = np.broadcast_to(limb <= 0, shape)
        lab[inside] = LABEL["muscle"]
        pad = (_ellipsoid(A, S, L, (-30 * sc, 4 * sc, 0.0), (11 * sc, 12 * sc, 22 * sc)) <= 0) | (
            _ellipsoid(A, S, L, (42 * sc, -5 * sc, 0.0), (14 * sc, 45 * sc, 14 * sc)) <= 0
        )
        lab[np.broadcast_to(pad, shape) & inside] = LABEL["fat"]
        lab[np.broadcast_to((limb > -(1.6 + fat)) & (limb <= 0), shape)] = LABEL["fat"]
        lab[np.broadcast_to((limb > -1.6) & (limb <= 0), shape)] = LABEL["skin"]

        # tendons: patellar (patella lower pole -> tuberosity), quadriceps (above the patella)
        cf, sf = math.cos(th), math.sin(th)
        pole = (pc[0] + 3 * ps, pc[1] + 21 * ps)  # in the femur frame -> world (a, s)
        pole_w = (
            piv_a + cf * (pole[0] - piv_a) + sf * (pole[1] - piv_s),
            piv_s - sf * (pole[0] - piv_a) + cf * (pole[1] - piv_s),
        )
        ptendon = (_segment_dist_2d(A, S, pole_w, (-27 * sc, 30 * sc)) <= 2.5) & (np.abs(L) <= 13 * sc)
        qtendon = (_segment_dist_2d(Af, Sf, (pc[0] + 2 * ps, pc[1] - 19 * ps), (pc[0] + 9 * ps, pc[1] - 80 * ps)) <= 3.0) & (
            np.abs(L) <= 16 * sc
        )
        lab[np.broadcast_to(ptendon | qtendon, shape) & inside] = LABEL["tendon_ligament"]

        # joint fluid: film around cartilage inside the capsule, suprapatellar recess
        cfm = g.cart_femur_medial * step + g.cart_femur_lateral * (1 - step)
        ctm = g.cart_tibia_medial * step + g.cart_tibia_lateral * (1 - step)
        cfem = np.where(Af < -5 * sc, p.trochlear_cartilage_mm, cfm)
        capsule = _ellipsoid(A, S, L, (0.0, -8 * sc, 0.0), (38 * sc, 34 * sc, 44 * sc)) <= 0
        film = 0.5 + 1.5 * p.effusion
        edge = max(lm + p.condyle_halfwidth_medial, -ll + p.condyle_halfwidth_lateral)
        # articular surfaces: distal and posterior condyles, trochlea (not the metaphysis)
        s_mid = 0.5 * (g.condyle_s_medial + g.condyle_s_lateral)
        r_mid = 0.5 * (rm + rl)
        condylar = (np.minimum(cond_m, cond_l) <= 4.0) & ((S > s_mid - 0.3 * r_mid) | (A > p.condyle_ap + 0.5 * r_mid))
        trochlear = (Af < -8 * sc) & (Sf > -48 * sc)
        articular = (condylar | trochlear) & (np.abs(L) < edge) & ~((np.abs(L) < 7 * sc) & (A > 0))
        fluid = capsule & (((femur <= cfem + film) & articular) | ((S >= H - ctm - film) & (S <= H + 1) & (ell <= 0)))
        recess = _ellipsoid(Af, Sf, L, (-33 * sc, -55 * sc, 0.0), ((2.5 + 4 * p.effusion) * sc, (16 + 10 * p.effusion) * sc, 20 * sc))
        lab[(fluid | (recess <= 0)) & inside] = LABEL["joint_fluid"]

        # menisci: peripheral wedges on each plateau, C-shaped (open towards the spines)
        for lc, ext in ((lm, p.meniscal_extrusion_mm), (ll, 0.3 * p.meniscal_extrusion_mm)):
            q = np.sqrt(((A - p.condyle_ap + 1) / (21 * sc)) ** 2 + ((L - lc - np.sign(lc) * ext) / (16 * sc)) ** 2)
            h = 6.5 * sc * np.clip((q - 0.55) / 0.45, 0, 1)
            men = (q >= 0.55) & (q <= 1.0) & (S < H) & (S >= H - h) & (np.abs(L) > 6 * sc)
            lab[men] = LABEL["meniscus"]

        # cartilage
        qt = np.minimum(
            ((A - p.condyle_ap) / (18 * sc)) ** 2 + ((L - lm) / (14 * sc)) ** 2,
            ((A - p.condyle_ap) / (18 * sc)) ** 2 + ((L - ll) / (14 * sc)) ** 2,
        )
        tcart = (S < H) & (S >= H - ctm) & (qt < 1.0) & (np.abs(L) > 6 * sc)
        lab[tcart] = LABEL["tibial_cartilage"]
        pcart = (patella > 0) & (patella <= p.patellar_cartilage_mm) & (Af > pc[0])
        lab[pcart] = LABEL["patellar_cartilage"]
        fcart = (femur > 0) & (femur <= cfem) & articular
        lab[fcart] = LABEL["femoral_cartilage"]

        # bones: marrow, subchondral sclerosis, cortex
        lab[np.broadcast_to(fibula <= 0, shape)] = LABEL["fibula"]
        lab[tibia <= 0] = LABEL["tibia"]
        lab[patella <= 0] = LABEL["patella"]
        lab[femur <= 0] = LABEL["femur"]
        if p.sclerosis_mm > 0:
            d = p.sclerosis_mm
            for lc, hw, k, sc_c, r_c in (
                (lm, p.condyle_halfwidth_medial, 1.0, g.condyle_s_medial, rm),
                (ll, p.condyle_halfwidth_lateral, 0.5 if p.grade >= 4 else 0.0, g.condyle_s_lateral, rl),
            ):
                if k == 0:
                    continue
                # depth fades away from the load-bearing contact (no sharp-edged box)
                w = d * k * np.exp(-(((A - p.condyle_ap) / (12 * sc)) ** 2) - ((L - lc) / hw) ** 4)
                w_f = w * _smoothstep((S - sc_c) / (0.8 * r_c))
                lab[(tibia <= 0) & (S >= H) & (S <= H + w)] = LABEL["sclerotic_bone"]
                lab[(femur <= 0) & (femur >= -w_f)] = LABEL["sclerotic_bone"]
        tc_f = 1.0 + 3.0 * _smoothstep((-Sf - 40 * sc) / (25 * sc))
        tc_t = 1.0 + 3.0 * _smoothstep((S - 35 * sc) / (30 * sc))
        cortex = ((femur <= 0) & (femur > -tc_f)) | ((tibia <= 0) & (tibia > -tc_t))
        cortex |= ((patella <= 0) & (patella > -1.2)) | ((fibula <= 0) & (fibula > -1.5))
        lab[cortex] = LABEL["cortical_bone"]
        return lab
