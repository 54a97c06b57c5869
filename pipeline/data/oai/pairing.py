"""Pair, per participant, visit and knee, one knee radiograph with one MRI series.

Rules (from the OAI layout, :mod:`.layout`):

- radiograph candidates: series folders starting with ``0`` whose SeriesDescription is a PA
  fixed-flexion knee view; a bilateral view is a candidate for both knees, a unilateral one
  for its knee; other views (full limb, lateral, hands...) are not candidates;
- MRI candidates: series folders starting with ``1`` whose SeriesDescription is the chosen
  sequence with ``_LEFT``/``_RIGHT`` (``SAG_3D_DESS_RIGHT``); other sequences are not candidates;
- of several candidates of one kind for the same participant, visit and knee (rescans), the
  last wins (latest StudyDate, then highest series folder number); the others are reported
  as superseded;
- a radiograph and an MRI pair when their StudyDates lie at most ``window_days`` apart
  (radiograph and MRI of one visit are often taken weeks apart).

Every candidate that does not end up in a pair is reported once per knee with its reason
(:data:`REASONS`), and :class:`PairingResult.summary` counts everything.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import layout
from .index import IndexProblem, SeriesRecord

#: Default largest gap, in days, between the radiograph and the MRI of one pair.
DEFAULT_WINDOW_DAYS: int = 60

#: Reasons an unpaired candidate is reported with.
NO_MRI = "no MRI"
NO_XRAY = "no radiograph"
OUTSIDE_WINDOW = "outside the date window"
SUPERSEDED = "superseded by a later rescan"
UNREADABLE = "unreadable"
NOT_PLACED = "knee not placed"
REASONS: tuple[str, ...] = (NO_MRI, NO_XRAY, OUTSIDE_WINDOW, SUPERSEDED, UNREADABLE, NOT_PLACED)


@dataclass(frozen=True)
class Pair:
    """One knee at one visit: its radiograph and MRI series."""

    participant: str
    visit: int
    side: str
    xray: SeriesRecord
    mri: SeriesRecord

    @property
    def days_apart(self) -> int:
        """MRI StudyDate minus radiograph StudyDate, days."""
        return (self.mri.study_date - self.xray.study_date).days

    @property
    def bilateral(self) -> bool:
        """Whether the radiograph shows both knees."""
        return layout.xray_knees(self.xray.series_description) == "B"


@dataclass(frozen=True)
class Unpaired:
    """A candidate (one knee of it) that is not in a pair, and why."""

    participant: str
    visit: int | None
    side: str
    kind: str  # "xray", "mri", "index", or "grade" (a grade problem of a paired knee, see build.join_grades)
    path: str
    reason: str
    detail: str = ""

    def as_row(self) -> dict[str, str]:
        """CSV row of the report."""
        return {
            "participant": self.participant, "visit": "" if self.visit is None else layout.visit_label(self.visit),
            "side": self.side, "kind": self.kind, "path": self.path, "reason": self.reason, "detail": self.detail,
        }


@dataclass
class PairingResult:
    """Pairs, unpaired candidates and counts."""

    pairs: list[Pair] = field(default_factory=list)
    unpaired: list[Unpaired] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)

    @property
    def summary(self) -> dict[str, int]:
        """Counts: pairs, participants, each unpaired reason, ignored series by cause."""
        counts = {"pairs": len(self.pairs), "participants": len({p.participant for p in self.pairs})}
        reasons = Counter(u.reason for u in self.unpaired)
        counts.update({f"unpaired: {reason}": reasons.get(reason, 0) for reason in REASONS})
        counts.update({f"ignored: {cause}": n for cause, n in sorted(self.ignored.items())})
        return counts


def _last(records: list[SeriesRecord]) -> tuple[SeriesRecord, list[SeriesRecord]]:
    """The rescan that wins (latest date, then highest series number) and the ones it supersedes."""
    ordered = sorted(records, key=lambda r: (r.study_date, r.series, r.path))
    return ordered[-1], ordered[:-1]


def pair_series(
    records: Iterable[SeriesRecord],
    sequence: str = layout.DEFAULT_SEQUENCE,
    visits: Iterable[int] | None = None,
    window_days: int = DEFAULT_WINDOW_DAYS,
    problems: Iterable[IndexProblem] = (),
) -> PairingResult:
    """Pair radiographs and MRI series of the chosen sequence; report everything else once.

    Args:
        records: index rows (:func:`~.index.read_indexes`).
        sequence: MRI SeriesDescription without the side suffix (``SAG_3D_DESS``).
        visits: months to keep (None: all); series of other visits are ignored and counted.
        window_days: largest |MRI date - radiograph date| of a pair.
        problems: unusable index rows, reported as unreadable.

    Returns:
        :class:`PairingResult` with pairs sorted by (participant, visit, side).
    """
    if window_days < 0:
        raise ValueError(f"window_days must be >= 0, got {window_days}")
    keep = None if visits is None else set(visits)
    result = PairingResult()
    for problem in problems:
        result.unpaired.append(Unpaired(problem.participant, None, "", "index", problem.folder, UNREADABLE,
                                        f"{problem.source}: {problem.reason}"))

    xrays: dict[tuple[str, int, str], list[SeriesRecord]] = defaultdict(list)
    mris: dict[tuple[str, int, str], list[SeriesRecord]] = defaultdict(list)
    for record in records:
        if keep is not None and record.visit not in keep:
            result.ignored["other visit"] += 1
            continue
        if record.kind == "xray":
            knees = layout.xray_knees(record.series_description)
            if knees is None:
                result.ignored["radiograph view not used"] += 1
                continue
            for side in ("R", "L") if knees == "B" else (knees,):
                xrays[(record.participant, record.visit, side)].append(record)
        else:
            side = layout.mri_side(record.series_description, sequence)
            if side is None:
                result.ignored[f"MRI series other than {sequence}"] += 1
                continue
            mris[(record.participant, record.visit, side)].append(record)

    def report(key, record, kind, reason, detail=""):
        result.unpaired.append(Unpaired(key[0], key[1], key[2], kind, record.path, reason, detail))

    for key in sorted(set(xrays) | set(mris)):
        xray = mri = None
        if key in xrays:
            xray, old = _last(xrays[key])
            for r in old:
                report(key, r, "xray", SUPERSEDED, f"{xray.path} of {xray.study_date:%Y-%m-%d} wins")
        if key in mris:
            mri, old = _last(mris[key])
            for r in old:
                report(key, r, "mri", SUPERSEDED, f"{mri.path} of {mri.study_date:%Y-%m-%d} wins")
        if xray is None:
            report(key, mri, "mri", NO_XRAY, "no PA knee radiograph of this knee at this visit")
        elif mri is None:
            report(key, xray, "xray", NO_MRI, f"no {sequence} series of this knee at this visit")
        elif abs((mri.study_date - xray.study_date).days) > window_days:
            detail = (f"radiograph {xray.study_date:%Y-%m-%d}, MRI {mri.study_date:%Y-%m-%d}: "
                      f"{abs((mri.study_date - xray.study_date).days)} days > {window_days}")
            report(key, xray, "xray", OUTSIDE_WINDOW, detail)
            report(key, mri, "mri", OUTSIDE_WINDOW, detail)
        else:
            result.pairs.append(Pair(key[0], key[1], key[2], xray, mri))
    return result
