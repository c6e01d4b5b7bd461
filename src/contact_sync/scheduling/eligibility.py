"""May this contact be called at ``at``, and if not, why not and from when (docs/design.md §12).

Pure: the caller reads the contact, its attempts and the team's policy; this
module decides. The single-contact endpoint and the eligible stream both ask
``reasons_at``, so the stream holds exactly the contacts the endpoint calls
eligible, by construction.

Eligibility only changes at a few instants: a window's start or end or a
local midnight (in the contact's zone and, when it matters, its number's
zone), a change of UTC offset, an attempt leaving the rolling 24 hours, and
the end of the newest attempt's retry delay. Every rule admits a time from
such an instant on (windows are start-inclusive, end-exclusive; a delay ends
at ``ended_at + delay``), so ``next_eligible_at`` is the first of those
instants after ``at`` that is eligible: exact, with no stepping by minutes,
and right across DST changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from contact_sync.contacts.lead_status import STICKY
from contact_sync.scheduling.jurisdictions import Jurisdictions, StateRules, load_jurisdictions
from contact_sync.scheduling.policy import WEEKDAYS, CallingPolicy

# The reason codes of docs/design.md §12, in the order answers list them.
REASON_CODES = (
    "do_not_call",
    "no_phone",
    "status_closed",
    "outside_window",
    "day_not_allowed",
    "holiday",
    "jurisdiction_window",
    "jurisdiction_day",
    "jurisdiction_attempt_cap",
    "max_attempts_total",
    "max_attempts_per_day",
    "retry_after",
)
# Reasons no passing time clears: their answer has no next_eligible_at.
PERMANENT = frozenset({"do_not_call", "no_phone", "status_closed", "max_attempts_total"})
HORIZON = timedelta(days=14)
ROLLING = timedelta(hours=24)
# Attempts older than this before ``at`` never matter for caps by the day or the
# rolling 24 hours, also over the 14-day search (a local day is at most 25 h).
MIN_LOOKBACK = timedelta(hours=48)
_STEP = timedelta(hours=12)  # no zone changes its offset twice within 12 hours


@dataclass(frozen=True)
class ContactFacts:
    """What eligibility reads of a contact."""

    do_not_call: bool
    phone: str | None
    lead_status: str
    timezone: str | None
    phone_zone: str | None
    phone_state: str | None


@dataclass(frozen=True)
class Attempt:
    """An outbound call of the ledger: when it ended and how."""

    ended_at: datetime
    outcome: str


@dataclass(frozen=True)
class Attempts:
    """A contact's attempts as of ``at``: the count of all, and each one within the lookback."""

    total: int
    recent: tuple[Attempt, ...] = ()


NO_ATTEMPTS = Attempts(0)


@dataclass(frozen=True)
class Rules:
    """The policy as one query applies it: its window and default zone may be overridden."""

    policy: CallingPolicy
    window: tuple[time, time]
    default_timezone: str
    floor: tuple[time, time]
    jurisdictions: Jurisdictions | None
    lookback: timedelta = field(default=MIN_LOOKBACK)
    delays: dict[str, timedelta] = field(default_factory=dict)

    @property
    def attempts_matter(self) -> bool:
        """Whether an attempt can refuse a call: a cap (the policy's or a state's) or a delay.

        Without any, every attempt passes every test of ``_attempt_reasons``.
        """
        policy = self.policy
        if policy.max_attempts_total is not None or policy.max_attempts_per_day is not None:
            return True
        if any(delay > timedelta(0) for delay in self.delays.values()):
            return True
        states = self.jurisdictions.states.values() if self.jurisdictions is not None else ()
        return any(state.attempt_cap_24h is not None for state in states)


@dataclass(frozen=True)
class Reason:
    """One reason a contact may not be called, with a sentence for a person."""

    code: str
    detail: str


@dataclass(frozen=True)
class Eligibility:
    """The endpoint's answer."""

    eligible: bool
    at: datetime
    reasons: tuple[Reason, ...]
    next_eligible_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """``{eligible, at, reasons: [{code, detail}], next_eligible_at}``, times in UTC ISO."""
        return {
            "eligible": self.eligible,
            "at": _iso(self.at),
            "reasons": [{"code": r.code, "detail": r.detail} for r in self.reasons],
            "next_eligible_at": None
            if self.next_eligible_at is None
            else _iso(self.next_eligible_at),
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def lookback(policy: CallingPolicy) -> timedelta:
    """How far before ``at`` attempts can matter: the caps' reach or the longest retry delay."""
    return max(MIN_LOOKBACK, *_delays(policy).values())


def _delays(policy: CallingPolicy) -> dict[str, timedelta]:
    """The retry delay per outcome."""
    retry = policy.retry_after
    return {name: getattr(retry, name) for name in type(retry).model_fields}


def rules_for(
    policy: CallingPolicy,
    *,
    window_start: time | None = None,
    window_end: time | None = None,
    default_timezone: str | None = None,
    jurisdictions: Jurisdictions | None = None,
) -> Rules:
    """The rules of one question: the policy, with a query's overrides for that query only."""
    shipped = jurisdictions or load_jurisdictions()
    return Rules(
        policy=policy,
        window=(window_start or policy.window.start, window_end or policy.window.end),
        default_timezone=default_timezone or policy.default_timezone,
        floor=shipped.floor_window,
        jurisdictions=shipped if policy.jurisdiction_rules else None,
        lookback=lookback(policy),
        delays=_delays(policy),
    )


def summarise(attempts: Iterable[Attempt], at: datetime, rules: Rules) -> Attempts:
    """The ``Attempts`` of a contact as of ``at``, from all its outbound calls."""
    counted = [a for a in attempts if a.ended_at <= at]
    since = at - rules.lookback
    return Attempts(len(counted), tuple(a for a in counted if a.ended_at > since))


@cache
def zone_info(name: str | None) -> ZoneInfo | None:
    """The zone, or None for a name this system's zone data does not know."""
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def in_window(local: time, start: time, end: time) -> bool:
    """Start inclusive, end exclusive; a start later than the end spans midnight."""
    if start <= end:
        return start <= local < end
    return local >= start or local < end


def _clock(moment: time) -> str:
    return moment.strftime("%H:%M")


@dataclass(frozen=True)
class _Place:
    """Where the contact is taken to be: its zone, and its number's zone when that must agree."""

    zone_name: str
    zone: tzinfo
    number_zone: ZoneInfo | None
    state: StateRules | None


def _place(facts: ContactFacts, rules: Rules) -> _Place:
    name = facts.timezone or facts.phone_zone or rules.default_timezone
    zone = zone_info(name) or zone_info(rules.default_timezone) or UTC
    number = zone_info(facts.phone_zone) if facts.timezone is not None else None
    states = rules.jurisdictions.states if rules.jurisdictions is not None else {}
    return _Place(name, zone, number, states.get(facts.phone_state or ""))


def static_reasons(facts: ContactFacts) -> list[Reason]:
    """The reasons no time clears that the contact row itself holds."""
    found = []
    if facts.do_not_call:
        found.append(Reason("do_not_call", "The contact is marked do not call."))
    if facts.phone is None:
        found.append(Reason("no_phone", "The contact has no primary phone number."))
    if facts.lead_status in STICKY:
        found.append(
            Reason("status_closed", f"Lead status {facts.lead_status} is closed to calls.")
        )
    return found


def _window_reason(place: _Place, rules: Rules, at: datetime) -> Reason | None:
    start, end = rules.window
    floor_start, floor_end = rules.floor
    zones: list[tuple[str, tzinfo]] = [(place.zone_name, place.zone)]
    if (
        place.number_zone is not None
        and at.astimezone(place.zone).utcoffset() != at.astimezone(place.number_zone).utcoffset()
    ):
        zones.append((f"the number's zone {place.number_zone.key}", place.number_zone))
    for name, zone in zones:
        local = at.astimezone(zone).time().replace(tzinfo=None)
        if not (in_window(local, start, end) and in_window(local, floor_start, floor_end)):
            return Reason(
                "outside_window",
                f"It is {_clock(local)} in {name}: outside the window {_clock(start)}-"
                f"{_clock(end)} and the {_clock(floor_start)}-{_clock(floor_end)} floor.",
            )
    return None


def _day_reasons(place: _Place, rules: Rules, local: datetime) -> list[Reason]:
    found = []
    weekday = WEEKDAYS[local.weekday()]
    if weekday not in rules.policy.days:
        found.append(Reason("day_not_allowed", f"The team does not call on {weekday}."))
    if local.date() in rules.policy.holidays:
        found.append(Reason("holiday", f"{local.date()} is one of the team's holidays."))
    return found


def _jurisdiction_reasons(state: StateRules, local: datetime) -> list[Reason]:
    found = []
    weekday = WEEKDAYS[local.weekday()]
    window = state.window_on(weekday)
    clock = local.time().replace(tzinfo=None)
    if window is not None and not in_window(clock, window.start, window.end):
        found.append(
            Reason(
                "jurisdiction_window",
                f"{state.name} allows calls {_clock(window.start)}-{_clock(window.end)} on "
                f"{weekday} ({window.source.citation}); it is {_clock(clock)} there.",
            )
        )
    days = []
    if state.no_call_days is not None and weekday in state.no_call_days.days:
        days.append(f"no calls on {weekday} ({state.no_call_days.source.citation})")
    holiday = state.holiday_on(local.date())
    if holiday is not None and state.holidays is not None:
        days.append(f"no calls on {holiday} ({state.holidays.source.citation})")
    if days:
        found.append(Reason("jurisdiction_day", f"{state.name}: " + "; ".join(days) + "."))
    return found


def _newest(counted: list[Attempt], rules: Rules) -> tuple[Attempt, datetime] | None:
    """The newest attempt and when its retry delay ends (ties: the longest delay)."""
    if not counted:
        return None
    newest = max(a.ended_at for a in counted)
    delays = rules.delays
    tied = [a for a in counted if a.ended_at == newest]
    attempt = max(tied, key=lambda a: delays.get(a.outcome, timedelta(0)))
    return attempt, newest + delays.get(attempt.outcome, timedelta(0))


def _counted(attempts: Attempts, at: datetime) -> list[Attempt]:
    return [a for a in attempts.recent if a.ended_at <= at]


def _over_total(rules: Rules, attempts: Attempts) -> bool:
    cap = rules.policy.max_attempts_total
    return cap is not None and attempts.total >= cap


def _state_cap_reached(place: _Place, counted: list[Attempt], at: datetime) -> int | None:
    """The attempts in the rolling 24 hours when they reach the state's cap, else None."""
    state = place.state
    if state is None or state.attempt_cap_24h is None:
        return None
    since = at - ROLLING
    made = sum(1 for a in counted if a.ended_at > since)
    return made if made >= state.attempt_cap_24h.max else None


def _day_cap_reached(
    place: _Place, rules: Rules, counted: list[Attempt], at: datetime
) -> int | None:
    """The attempts on the contact's local date of ``at`` when they reach the policy's cap
    a day, else None."""
    cap = rules.policy.max_attempts_per_day
    if cap is None:
        return None
    today = at.astimezone(place.zone).date()
    made = sum(1 for a in counted if a.ended_at.astimezone(place.zone).date() == today)
    return made if made >= cap else None


def _attempts_allow(place: _Place, rules: Rules, attempts: Attempts, at: datetime) -> bool:
    """Whether ``_attempt_reasons`` is empty: the same tests, without writing the reasons."""
    if _over_total(rules, attempts):
        return False
    counted = _counted(attempts, at)
    if not counted:
        return True
    if _state_cap_reached(place, counted, at) is not None:
        return False
    if _day_cap_reached(place, rules, counted, at) is not None:
        return False
    newest = _newest(counted, rules)
    return newest is None or at >= newest[1]


def _attempt_reasons(place: _Place, rules: Rules, attempts: Attempts, at: datetime) -> list[Reason]:
    total_cap = rules.policy.max_attempts_total
    if not attempts.recent and not _over_total(rules, attempts):
        return []
    found = []
    counted = _counted(attempts, at)
    state = place.state
    last_day = _state_cap_reached(place, counted, at)
    if last_day is not None and state is not None and state.attempt_cap_24h is not None:
        cap = state.attempt_cap_24h
        found.append(
            Reason(
                "jurisdiction_attempt_cap",
                f"{last_day} attempts in the last 24 hours; {state.name} allows "
                f"{cap.max} ({cap.source.citation}).",
            )
        )
    if _over_total(rules, attempts):
        found.append(
            Reason(
                "max_attempts_total", f"{attempts.total} attempts; the team's cap is {total_cap}."
            )
        )
    made = _day_cap_reached(place, rules, counted, at)
    if made is not None:
        today = at.astimezone(place.zone).date()
        found.append(
            Reason(
                "max_attempts_per_day",
                f"{made} attempts on {today} ({place.zone_name}); the team's cap is "
                f"{rules.policy.max_attempts_per_day} a day.",
            )
        )
    newest = _newest(counted, rules)
    if newest is not None and at < newest[1]:
        attempt, until = newest
        found.append(
            Reason(
                "retry_after",
                f"The last attempt ({attempt.outcome}) ended at {_iso(attempt.ended_at)}; "
                f"the next may start at {_iso(until)}.",
            )
        )
    return found


def _clock_part(place: _Place, rules: Rules, at: datetime) -> list[Reason]:
    """The reasons of the clock and the calendar: the same for every contact of a place."""
    local = at.astimezone(place.zone)
    found = [r for r in [_window_reason(place, rules, at)] if r is not None]
    found += _day_reasons(place, rules, local)
    if place.state is not None:
        found += _jurisdiction_reasons(place.state, local)
    return found


def _timed_reasons(place: _Place, rules: Rules, attempts: Attempts, at: datetime) -> list[Reason]:
    return _clock_part(place, rules, at) + _attempt_reasons(place, rules, attempts, at)


def _ordered(reasons: list[Reason]) -> tuple[Reason, ...]:
    return tuple(sorted(reasons, key=lambda r: REASON_CODES.index(r.code)))


PlaceKey = tuple[str | None, str | None, str | None]


@dataclass(frozen=True)
class OpenPlace:
    """A place the clock allows at ``at``, as the attempt rules see it.

    ``day_start``: the first instant of ``at``'s local date there, when the
    attempts that ``_day_cap_reached`` counts are exactly those ending in
    ``[day_start, at]`` (None in the rare zones where a change of offset makes
    that date not one interval up to ``at``). ``state_cap``: the state's
    rolling-24-hour cap, if any.
    """

    day_start: datetime | None
    state_cap: int | None


_TICK = timedelta(microseconds=1)


def _day_start(zone: tzinfo, at: datetime) -> datetime | None:
    """The first instant of ``at``'s local date in ``zone``, when that date runs in one
    piece from it to ``at``; else None.

    Local midnight with ``fold=0`` is that instant in nearly every zone, also
    where midnight is skipped or repeated; it is checked rather than trusted:
    the instant before it must be on another date, and no change of offset up
    to ``at`` may turn the clock back onto another date.
    """
    today = at.astimezone(zone).date()
    start = datetime.combine(today, time(0), tzinfo=zone).astimezone(UTC)
    if start.astimezone(zone).date() != today or (start - _TICK).astimezone(zone).date() == today:
        return None
    for change in _transitions(zone, start, at):
        if change <= at and change.astimezone(zone).date() != today:
            return None
    return start


class Moment:
    """The rules at one instant, asked about many contacts (a page of the stream).

    What the clock and the calendar say depends only on the contact's place
    (timezone, number zone, state): it is worked out once per place, by the
    same functions as for a single contact.
    """

    def __init__(self, rules: Rules, at: datetime) -> None:
        self.rules = rules
        self.at = at
        self._places: dict[PlaceKey, tuple[_Place, list[Reason]]] = {}
        self._day_starts: dict[tzinfo, datetime | None] = {}
        self._open: dict[PlaceKey, OpenPlace | None] = {}
        self._verdicts: dict[tuple[Any, ...], bool] = {}
        # Teams whose walk at ``at`` reads its rows without a filter by place (the stream's
        # choice, contacts/query.py): nearly all of its rows are in places the clock allows.
        self.unfiltered: set[str] = set()
        # What the stream's callers work out once a walk rather than once a page (the
        # team's places and their verdicts, contacts/query.py), kept with the walk's Moment.
        self.memo: dict[Any, Any] = {}

    def _of(self, key: PlaceKey) -> tuple[_Place, list[Reason]]:
        found = self._places.get(key)
        if found is None:
            facts = ContactFacts(False, None, "", *key)
            place = _place(facts, self.rules)
            found = self._places[key] = (place, _clock_part(place, self.rules, self.at))
        return found

    def clock_allows(self, key: PlaceKey) -> bool:
        """Whether the clock and the calendar allow a call to this place at ``at``."""
        return not self._of(key)[1]

    def open_place(self, key: PlaceKey) -> OpenPlace | None:
        """What the attempt rules read of a place the clock allows at ``at`` (None: it
        does not), for the stream's SQL (contacts/stream_sql.py)."""
        if key in self._open:
            return self._open[key]
        place = _place(ContactFacts(False, None, "", *key), self.rules)
        # Places that differ only in name share the verdict: it depends on the zones and
        # the state alone (the names are in the reasons' texts, which are not written).
        verdict = (place.zone, place.number_zone, id(place.state))
        allowed = self._verdicts.get(verdict)
        if allowed is None:
            allowed = self._verdicts[verdict] = not _clock_part(place, self.rules, self.at)
        found = None
        if allowed:
            zone = place.zone
            if zone not in self._day_starts:
                self._day_starts[zone] = _day_start(zone, self.at)
            cap = place.state.attempt_cap_24h if place.state is not None else None
            found = OpenPlace(self._day_starts[zone], None if cap is None else cap.max)
        self._open[key] = found
        return found

    def reasons(self, facts: ContactFacts, attempts: Attempts) -> tuple[Reason, ...]:
        """Every reason the contact may not be called at ``at`` (none: it may)."""
        place, clock = self._of((facts.timezone, facts.phone_zone, facts.phone_state))
        timed = _attempt_reasons(place, self.rules, attempts, self.at)
        return _ordered(static_reasons(facts) + clock + timed)

    def allows(self, facts: Any, attempts: Attempts) -> bool:
        """Whether ``reasons`` is empty; ``facts``: anything with ``ContactFacts``' attributes.

        The stream asks this of every row: the same tests as ``reasons`` (the
        attempts' through the same helpers), without building a ``ContactFacts``
        or writing a reason, and the clock's per place as ``reasons`` caches it.
        """
        if facts.do_not_call or facts.phone is None or facts.lead_status in STICKY:
            return False
        place, clock = self._of((facts.timezone, facts.phone_zone, facts.phone_state))
        if clock:
            return False
        return _attempts_allow(place, self.rules, attempts, self.at)


_WALKS: dict[tuple[Any, ...], Moment] = {}
_WALKS_KEPT = 64


def walk_moment(rules: Rules, at: datetime) -> Moment:
    """The ``Moment`` of ``rules`` at ``at``, shared by every page of a walk (the pages of
    one stream ask at the same ``at``): what the clock says of each place is worked out
    once a walk, not once a page. At most 64 are kept; a rule change is another key."""
    key = (
        rules.policy.model_dump_json(),
        rules.window,
        rules.default_timezone,
        rules.floor,
        id(rules.jurisdictions),  # the Moment keeps them alive: the id is not reused
        at,
    )
    found = _WALKS.get(key)
    if found is None:
        if len(_WALKS) >= _WALKS_KEPT:
            _WALKS.clear()
        found = _WALKS[key] = Moment(rules, at)
    return found


def reasons_at(
    facts: ContactFacts, attempts: Attempts, rules: Rules, at: datetime
) -> tuple[Reason, ...]:
    """Every reason the contact may not be called at ``at`` (none: it may)."""
    return Moment(rules, at).reasons(facts, attempts)


def evaluate(facts: ContactFacts, attempts: Attempts, rules: Rules, at: datetime) -> Eligibility:
    """The full answer: eligible, every reason, and the next eligible instant."""
    reasons = reasons_at(facts, attempts, rules, at)
    if not reasons:
        return Eligibility(True, at, reasons, at)
    if any(r.code in PERMANENT for r in reasons):
        return Eligibility(False, at, reasons, None)
    place = _place(facts, rules)
    upcoming = (
        moment
        for moment in _candidates(place, rules, attempts, at)
        if not _timed_reasons(place, rules, attempts, moment)
    )
    return Eligibility(False, at, reasons, next(upcoming, None))


def _candidates(place: _Place, rules: Rules, attempts: Attempts, at: datetime) -> list[datetime]:
    """Every instant in (at, at + 14 days] at which the answer can change, in order."""
    end = at + HORIZON
    found: set[datetime] = set()
    found.update(_local_boundaries(place.zone, _zone_times(place, rules), at, end))
    if place.number_zone is not None:
        times = (*rules.window, *rules.floor)
        found.update(_local_boundaries(place.number_zone, times, at, end))
        found.update(_transitions(place.number_zone, at, end))
    found.update(_transitions(place.zone, at, end))
    for attempt in attempts.recent:
        found.add(attempt.ended_at + ROLLING)
    newest = _newest(list(attempts.recent), rules)
    if newest is not None:
        found.add(newest[1])
    return sorted(moment for moment in found if at < moment <= end)


def _zone_times(place: _Place, rules: Rules) -> tuple[time, ...]:
    times = [time(0), *rules.window, *rules.floor]
    if place.state is not None:
        for window in place.state.windows:
            times += [window.start, window.end]
    return tuple(sorted(set(times)))


def _local_boundaries(
    zone: tzinfo, times: tuple[time, ...], start: datetime, end: datetime
) -> Iterator[datetime]:
    """Each of ``times`` on each local date from the day before ``start`` to after ``end``."""
    first = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date() + timedelta(days=1)
    day: date = first
    while day <= last:
        for moment in times:
            yield datetime.combine(day, moment, tzinfo=zone).astimezone(UTC)
        day += timedelta(days=1)


def _transitions(zone: tzinfo, start: datetime, end: datetime) -> Iterator[datetime]:
    """The instants in [start, end] at which ``zone`` changes its UTC offset (to the second)."""
    moment = start.astimezone(UTC).replace(microsecond=0)
    while moment < end:
        following = moment + _STEP
        if moment.astimezone(zone).utcoffset() != following.astimezone(zone).utcoffset():
            yield _bisect(zone, moment, following)
        moment = following


def _bisect(zone: tzinfo, before: datetime, after: datetime) -> datetime:
    offset = before.astimezone(zone).utcoffset()
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).utcoffset() == offset:
            before = middle
        else:
            after = middle
    return after
