"""A deterministic synthetic e-commerce history: customers, orders and support tickets.

Pure Python/numpy, no I/O. Every customer has a latent churn propensity that drives how
often they buy, how much, how often deliveries go wrong, how often they complain and how
satisfied they are. With probability equal to that propensity a customer churns at a
random time: their order rate fades over the 30-60 days before and they are silent after.
The ground truth is kept beside the events so that models can be checked against it.

Most customers buy as a Poisson process. A share of them (`regular_share`) keep a rhythm
instead: their gaps between orders are gamma-distributed around the same mean, drawn in
the customer's "operational time" (the seasons and their fade-out rescaled away), so the
seasons still move them and a churner's gaps lengthen as they fade out.

A `Shift` changes the shop for a while from a given day: order values, the ticket
rate, or the customer mix (a campaign's cohort of new customers). It draws from a
random stream of its own, so everything it does not change comes out as without it.

A `Treatment` is a marketing campaign's effect: customers it acted on (when the scorer
moved them into HIGH) churn less by the configured amount. Each acted-on churner is saved
with probability `effect`, drawn from a stream of its own: a saved customer's events up
to the instant they were acted on stay as they were (the scorer saw exactly those), and
from then on they buy at their full, un-faded rate until the end of the period, so a
customer who had already lapsed is won back. Everyone else comes out as without it.
A saved regular customer keeps their later base orders too and, from the last of them
(or the instant, if none), resumes their rhythm at the full rate.

The heavy lifting is vectorised per event kind; only the final conversion into the
schema's msgspec structs is a Python loop.
"""

from __future__ import annotations

import gc
import heapq
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd

from schemas.events import Customer, DeliveryStatus, Order, OrderItem, SupportTicket
from schemas.topics import CUSTOMERS, ORDERS, SUPPORT_TICKETS

Event = Customer | Order | SupportTicket
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
# (event time, kind rank, index within its list, topic, event): the merge order.
_Keyed = tuple[datetime, int, int, str, Event]

DEFAULT_START = datetime(2025, 7, 1, tzinfo=UTC)
DAY = 86_400
HOUR = 3_600
# Customers may have registered up to this long before the simulated period starts.
PRE_PERIOD_DAYS = 730

GENDERS = ("female", "male", "non-binary")
GENDER_WEIGHTS = (0.50, 0.47, 0.03)
CITIES = (
    "New York",
    "Los Angeles",
    "Chicago",
    "Houston",
    "Phoenix",
    "Philadelphia",
    "San Antonio",
    "San Diego",
    "Dallas",
    "Austin",
    "Seattle",
    "Denver",
    "Boston",
    "Miami",
    "Atlanta",
)
CITY_WEIGHTS = (16, 8, 6, 5, 4, 4, 3, 3, 4, 3, 4, 3, 4, 4, 4)

PRODUCT_CATEGORIES = ("electronics", "fashion", "home", "beauty", "grocery", "sports", "books")
CATEGORY_WEIGHTS = (0.12, 0.22, 0.15, 0.13, 0.18, 0.10, 0.10)
CATEGORY_MEDIAN_PRICE = (120.0, 40.0, 55.0, 22.0, 9.0, 45.0, 16.0)  # dollars
# Extra units per line beyond the first (Poisson mean): people buy groceries by the bag.
CATEGORY_EXTRA_UNITS = (0.05, 0.15, 0.15, 0.5, 0.9, 0.1, 0.2)

PAYMENT_METHODS = (
    "credit_card",
    "debit_card",
    "paypal",
    "apple_pay",
    "google_pay",
    "bank_transfer",
    "cash_on_delivery",
)
PAYMENT_WEIGHTS = (0.38, 0.20, 0.18, 0.10, 0.07, 0.04, 0.03)

# Codes index DELIVERY_STATUSES.
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = (
    "pending",
    "shipped",
    "delivered",
    "delayed",
    "failed",
    "returned",
    "cancelled",
)
PENDING, SHIPPED, DELIVERED, DELAYED, FAILED, RETURNED, CANCELLED = range(7)

TICKET_CATEGORIES = ("delivery", "payment", "product", "account", "other")
TICKET_DELIVERY, TICKET_PAYMENT, TICKET_PRODUCT, TICKET_ACCOUNT, TICKET_OTHER = range(5)
# Tickets that are not about a specific delivery problem.
SPONTANEOUS_TICKET_WEIGHTS = (0.10, 0.25, 0.30, 0.20, 0.15)
MEDIAN_RESOLUTION_HOURS = (30.0, 12.0, 24.0, 6.0, 10.0)

# Relative order intensity by UTC hour: a US shop, busiest in the (Eastern) evening.
_LOCAL_HOURLY = np.array(
    [
        *(0.30, 0.20, 0.15, 0.10, 0.10, 0.15, 0.30, 0.60, 0.90, 1.10, 1.20, 1.20),
        *(1.30, 1.20, 1.10, 1.10, 1.10, 1.20, 1.40, 1.60, 1.70, 1.60, 1.20, 0.70),
    ]
)
HOURLY_INTENSITY = np.roll(_LOCAL_HOURLY / _LOCAL_HOURLY.mean(), 5)  # UTC = Eastern + 5h
# January..December: quiet after the holidays, a peak around Black Friday and Christmas.
MONTHLY_INTENSITY = np.array([0.85, 0.85, 0.95, 0.95, 1.0, 0.95, 0.95, 1.0, 0.95, 1.0, 1.3, 1.35])
# Monday..Sunday.
WEEKDAY_INTENSITY = np.array([0.95, 0.95, 0.95, 1.0, 1.05, 1.1, 1.0])
MAX_INTENSITY = HOURLY_INTENSITY.max() * MONTHLY_INTENSITY.max() * WEEKDAY_INTENSITY.max()
# A regular customer's gaps between orders are gamma with a shape drawn log-uniformly from
# this range. Shape 1 would be Poisson (gaps' coefficient of variation 1); 2 is a loose
# habit (CV 0.71), 20 nearly clockwork (CV 0.22, a weekly grocery run): real repeat
# buyers lie between, and even the most regular miss or shift a purchase now and then.
RHYTHM_SHAPES = (2.0, 20.0)

ShiftKind = Literal["order_value", "ticket_rate", "customer_mix"]
SHIFT_KINDS: tuple[ShiftKind, ...] = get_args(ShiftKind)
# Each kind's default factor: order values +40%, three times the tickets, and a
# cohort placing as many orders during the shift as the rest of the shop.
DEFAULT_SHIFT_FACTORS: dict[str, float] = {
    "order_value": 1.4,
    "ticket_rate": 3.0,
    "customer_mix": 1.0,
}
# The customer_mix cohort: bargain hunters a promotion brings in. Each buys within
# hours of registering, sometimes once more, and is gone when the promotion ends.
COHORT_AGE = (23.0, 3.0)  # mean, standard deviation
COHORT_EMAIL_VERIFIED = 0.25
COHORT_PHONE_VERIFIED = 0.05
COHORT_SPEND = 0.7  # basket-size multiplier
COHORT_SECOND_ORDER = 0.3


@dataclass(frozen=True)
class Shift:
    """A change in the shop from `start` until `end` (None: the end of the period).

    - order_value: every item's price, hence every order's total, times `factor`;
    - ticket_rate: customers open `factor` times as many tickets: each ticket created
      during the shift brings `factor - 1` more on average, from the same customer,
      about the same thing, at random times of the shift;
    - customer_mix: a promotion's cohort of new customers, younger, seldom verified,
      with smaller baskets, registers during the shift, buys once or twice and is
      gone when it ends; `factor` is the cohort's orders over the rest of the shop's
      during the shift.
    """

    kind: ShiftKind
    start: datetime
    end: datetime | None = None
    factor: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in SHIFT_KINDS:
            raise ValueError(f"shift kind must be one of {', '.join(SHIFT_KINDS)}")
        if self.start.tzinfo is None or (self.end is not None and self.end.tzinfo is None):
            raise ValueError("shift start and end must be timezone-aware")
        if self.end is not None and self.end <= self.start:
            raise ValueError("a shift must end after it starts")
        if not (math.isfinite(self.multiplier) and self.multiplier > 0):
            raise ValueError("a shift's factor must be a positive number")
        if self.kind == "ticket_rate" and self.multiplier < 1:
            raise ValueError("a ticket_rate factor must be at least 1: tickets are added")

    @property
    def multiplier(self) -> float:
        return DEFAULT_SHIFT_FACTORS[self.kind] if self.factor is None else self.factor

    def window(self, start_s: int, end_s: int) -> tuple[int, int]:
        """The shift in epoch seconds, within the period [start_s, end_s)."""
        lo = max(start_s, math.ceil(self.start.timestamp()))
        hi = end_s if self.end is None else min(end_s, math.ceil(self.end.timestamp()))
        return lo, max(lo, hi)


@dataclass(frozen=True)
class Treatment:
    """A campaign's effect on the customers it acted on: each one who would churn is
    saved with probability `effect` (see the module docstring).

    `acted_on` maps a customer id to the instant marketing acted on them. Customers of
    a customer_mix shift's cohort may be named but are never saved: they are gone when
    their promotion ends whatever marketing does.
    """

    effect: float
    acted_on: Mapping[str, datetime]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.effect) and 0.0 <= self.effect <= 1.0):
            raise ValueError("a treatment's effect must be in [0, 1]")
        if any(when.tzinfo is None for when in self.acted_on.values()):
            raise ValueError("acted_on instants must be timezone-aware")


@dataclass
class History:
    """A generated history. Each event list is sorted by event time (then id).

    `truth` has one row per customer: customer_id, churn_propensity (the latent driver,
    in [0, 1]), churn_ts (when the customer went silent; NaT if they did not), saved
    (a `Treatment` kept them from churning) and rhythm_shape (the gamma shape of a regular
    customer's gaps between orders; 1.0 for a Poisson buyer).
    """

    customers: list[Customer]
    orders: list[Order]
    tickets: list[SupportTicket]
    truth: pd.DataFrame
    start: datetime
    end: datetime

    def events_in_time_order(self) -> Iterator[tuple[str, Event]]:
        """Yield (topic, event) for every event, merged by event time.

        A profile is emitted at its registration date, or at `start` for customers who
        registered earlier, so those all come first. Ties go profiles, then orders, then
        tickets, each in list order, so the sequence is fully deterministic.
        """
        start = self.start
        profiles: Iterator[_Keyed] = (
            (max(c.registration_date, start), 0, i, CUSTOMERS, c)
            for i, c in enumerate(self.customers)
        )
        orders: Iterator[_Keyed] = (
            (o.order_ts, 1, i, ORDERS, o) for i, o in enumerate(self.orders)
        )
        tickets: Iterator[_Keyed] = (
            (t.created_ts, 2, i, SUPPORT_TICKETS, t) for i, t in enumerate(self.tickets)
        )
        # (time, rank, index) is unique, so the events themselves are never compared.
        for _, _, _, topic, event in heapq.merge(profiles, orders, tickets):
            yield topic, event

    def __len__(self) -> int:
        """Number of events."""
        return len(self.customers) + len(self.orders) + len(self.tickets)

    @property
    def churned_fraction(self) -> float:
        """Share of customers who went silent during the period."""
        if self.truth.empty:
            return 0.0
        return float(self.truth["churn_ts"].notna().mean())

    @property
    def orders_per_customer(self) -> float:
        """Average number of orders per customer over the period."""
        return len(self.orders) / len(self.customers) if self.customers else 0.0


def generate_history(
    n_customers: int,
    seed: int = 7,
    start: datetime = DEFAULT_START,
    days: int = 365,
    shifts: Sequence[Shift] = (),
    treatment: Treatment | None = None,
    regular_share: float = 0.0,
) -> History:
    """Generate `n_customers` customers and their orders and tickets over `days` days,
    changed by each of `shifts` while it lasts (each acts on the shop without the
    others), and by `treatment` (which acts on the shop with them). A `regular_share`
    of the customers buy in a regular rhythm rather than as a Poisson process.

    The same arguments always give an identical history. All event times are whole UTC
    seconds in [start, start + days); registration dates may precede `start`.
    """
    if n_customers < 0:
        raise ValueError("n_customers must be >= 0")
    if days <= 0:
        raise ValueError("days must be > 0")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if not 0.0 <= regular_share <= 1.0:
        raise ValueError("regular_share must be in [0, 1]")
    rng = np.random.default_rng(seed)
    start_s = math.ceil(start.timestamp())
    end_s = start_s + days * DAY
    windows = [shift.window(start_s, end_s) for shift in shifts]
    value_shifts = [
        (lo, hi, shift.multiplier)
        for shift, (lo, hi) in zip(shifts, windows, strict=True)
        if shift.kind == "order_value"
    ]

    cust = _draw_customers(rng, n_customers, start_s, end_s)
    # The rhythms' own stream, used only when there are any: else the draws are as before.
    rhythm_rng = np.random.default_rng([seed, 3]) if regular_share > 0 else None
    if rhythm_rng is not None:
        cust.rhythm_shape = _draw_rhythm_shapes(rhythm_rng, n_customers, regular_share)
    orders = _draw_orders(rng, cust, start_s, end_s, rhythm_rng)
    _scale_values(orders, value_shifts)
    items = _draw_items(rng, orders)
    tickets = _draw_tickets(rng, cust, orders, end_s)

    customer_ids = [f"C{i:07d}" for i in range(1, n_customers + 1)]
    with _gc_paused():
        history = History(
            customers=_build_customers(rng, cust, customer_ids),
            orders=_build_orders(orders, items, customer_ids),
            tickets=_build_tickets(tickets, customer_ids),
            truth=_truth(cust, customer_ids),
            start=_utc(start_s),
            end=_utc(end_s),
        )
        for number, (shift, (lo, hi)) in enumerate(zip(shifts, windows, strict=True)):
            # Each shift's own random stream: the base history's draws stay as they were.
            drawn = np.random.default_rng([seed, 1, number])
            if shift.kind == "ticket_rate":
                extra = _clone_tickets(drawn, cust, tickets, lo, hi, shift.multiplier, end_s)
                more = _build_tickets(extra, customer_ids, first_id=len(history.tickets) + 1)
                history.tickets = _merged(history.tickets, more, lambda t: t.created_ts)
            elif shift.kind == "customer_mix":
                ordered = int(np.count_nonzero((orders.ts >= lo) & (orders.ts < hi)))
                size = round(shift.multiplier * ordered / (1 + COHORT_SECOND_ORDER))
                _add_cohort(history, drawn, size, lo, hi)
        if treatment is not None:
            # Last, so that the shifts' order ids are as without it; its own stream too.
            drawn = np.random.default_rng([seed, 2])
            _treat(history, drawn, treatment, cust, orders, customer_ids, value_shifts)
    return history


def _truth(cust: _Customers, customer_ids: list[str]) -> pd.DataFrame:
    churn_ts = pd.to_datetime(
        np.where(cust.churned, cust.churn_s, np.nan), unit="s", utc=True
    ).as_unit("s")
    return pd.DataFrame(
        {
            "customer_id": customer_ids,
            "churn_propensity": cust.propensity,
            "churn_ts": churn_ts,
            "saved": np.zeros(len(customer_ids), dtype=bool),
            "rhythm_shape": cust.rhythm_shape,
        }
    )


def _scale_values(orders: _Orders, value_shifts: list[tuple[int, int, float]]) -> None:
    """Basket sizes times each order_value shift's factor, for orders during it."""
    for lo, hi, factor in value_shifts:
        during = (orders.ts >= lo) & (orders.ts < hi)
        orders.scale = np.where(during, orders.scale * factor, orders.scale)


def _merged(base: list[Any], more: list[Any], time: Callable[[Any], datetime]) -> list[Any]:
    """Two lists sorted by event time as one (ties: `base` first)."""
    return list(heapq.merge(base, more, key=time))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building millions of structs (none form cycles).

    Otherwise each generation threshold triggers a scan of everything built so far,
    which doubles the build time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class _Customers:
    reg_s: IntArray  # registration time, sorted: ids follow sign-up order like a DB sequence
    propensity: FloatArray
    churned: BoolArray
    churn_s: IntArray  # churn time; end of period for customers who stay
    active_from: IntArray  # max(registration, start)
    active_to: IntArray  # churn time or end of period
    fade_s: IntArray  # length of the pre-churn fade-out window
    order_rate: FloatArray  # orders per day at full intensity
    spend: FloatArray  # customer's basket-size multiplier
    payment: IntArray  # preferred payment method
    rhythm_shape: FloatArray  # gamma shape of the gaps between orders; 1: Poisson buyer


@dataclass
class _Orders:
    cust: IntArray
    ts: IntArray
    status: IntArray
    payment: IntArray
    n_items: IntArray
    scale: FloatArray  # basket-size multiplier for this order
    voucher: BoolArray


@dataclass
class _Items:
    category: IntArray
    quantity: IntArray
    price_cents: IntArray
    total_cents: IntArray  # per order


@dataclass
class _Tickets:
    cust: IntArray
    ts: IntArray
    category: IntArray
    resolution_cs: IntArray  # resolution time in hundredths of an hour; -1 if unresolved
    satisfaction: IntArray  # 1..5, or 0 if not given


def _draw_customers(rng: np.random.Generator, n: int, start_s: int, end_s: int) -> _Customers:
    reg_s = np.sort(rng.integers(start_s - PRE_PERIOD_DAYS * DAY, end_s, size=n))
    propensity = rng.beta(2.0, 5.0, size=n)
    churned = rng.random(n) < propensity
    active_from = np.maximum(reg_s, start_s)
    # Uniform over the customer's active part of the period (at least one second).
    span = end_s - active_from
    churn_s = np.where(churned, active_from + (rng.random(n) * span).astype(np.int64), end_s)
    fade_s = (rng.uniform(30.0, 60.0, size=n) * DAY).astype(np.int64)

    # Most people buy about monthly, a loyal minority about weekly; propensity slows both.
    frequent = rng.random(n) < 0.18 * (1.0 - propensity)
    median_gap_days = np.where(frequent, 9.0, 45.0)
    order_rate = np.exp(rng.normal(0.0, 0.6, size=n)) / median_gap_days
    order_rate *= 1.3 - 1.1 * propensity

    spend = np.exp(rng.normal(0.0, 0.35, size=n)) * (1.15 - 0.6 * propensity)
    payment = rng.choice(len(PAYMENT_METHODS), size=n, p=_norm(PAYMENT_WEIGHTS))
    return _Customers(
        reg_s=reg_s,
        propensity=propensity,
        churned=churned,
        churn_s=churn_s,
        active_from=active_from,
        active_to=churn_s,
        fade_s=fade_s,
        order_rate=order_rate,
        spend=spend,
        payment=payment,
        rhythm_shape=np.ones(n),
    )


def _fade(cust: _Customers, idx: IntArray, ts: IntArray) -> FloatArray:
    """Order-rate multiplier in [0, 1]: falls linearly to 0 over the window before churn."""
    remaining = (cust.churn_s[idx] - ts) / cust.fade_s[idx]
    return np.where(cust.churned[idx], np.clip(remaining, 0.0, 1.0), 1.0)


def _intensity(ts: IntArray) -> FloatArray:
    """Seasonal x weekly x daily shape of demand, at most MAX_INTENSITY."""
    hour = (ts % DAY) // HOUR
    weekday = (ts // DAY + 3) % 7  # 1970-01-01 was a Thursday
    month = ts.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) % 12
    return HOURLY_INTENSITY[hour] * WEEKDAY_INTENSITY[weekday] * MONTHLY_INTENSITY[month]


def _draw_rhythm_shapes(rng: np.random.Generator, n: int, share: float) -> FloatArray:
    """Each customer's gap shape: 1 (a Poisson buyer) or, for a `share` of them, regular."""
    regular = rng.random(n) < share
    lo, hi = np.log(RHYTHM_SHAPES)
    return np.where(regular, np.exp(rng.uniform(lo, hi, size=n)), 1.0)


def _draw_orders(
    rng: np.random.Generator,
    cust: _Customers,
    start_s: int,
    end_s: int,
    rhythm_rng: np.random.Generator | None = None,
) -> _Orders:
    n = len(cust.reg_s)
    cand_cust, cand_ts = _thinned(
        rng, cust, np.arange(n), cust.active_from, cust.active_to, lambda i, t: _fade(cust, i, t)
    )
    if rhythm_rng is not None:
        # Regular customers' orders replace their Poisson ones, which are drawn all the
        # same: so everything else's draws are as without any regular customers.
        poisson = cust.rhythm_shape[cand_cust] == 1.0
        reg_cust, reg_ts = _rhythmic(rhythm_rng, cust, start_s, end_s)
        cand_cust = np.concatenate([cand_cust[poisson], reg_cust])
        cand_ts = np.concatenate([cand_ts[poisson], reg_ts])

    # Many new customers buy within hours of signing up.
    first = (cust.reg_s >= start_s) & (rng.random(n) < 0.6)
    first_ts = cust.reg_s + rng.exponential(2.0 * HOUR, size=n).astype(np.int64)
    first &= first_ts < cust.active_to

    idx = np.concatenate([cand_cust, np.flatnonzero(first)])
    ts = np.concatenate([cand_ts, first_ts[first]])
    order = np.lexsort((idx, ts))
    idx, ts = idx[order], ts[order]
    return _order_details(rng, cust, idx, ts, _fade(cust, idx, ts), start_s, end_s)


def _rhythmic(
    rng: np.random.Generator, cust: _Customers, start_s: int, end_s: int
) -> tuple[IntArray, IntArray]:
    """(customer, time) of the regular customers' orders over their active period, at
    the rate a Poisson buyer would have (order_rate x intensity x fade)."""
    who = np.flatnonzero(cust.rhythm_shape != 1.0)
    churn_s = cust.churn_s[who]
    window = _Window.of(
        _Clock.over(start_s, end_s),
        lo=cust.active_from[who],
        hi=cust.active_to[who],
        fade_from=np.where(cust.churned[who], churn_s - cust.fade_s[who], churn_s),
        fade_len=cust.fade_s[who],
        rate=cust.order_rate[who],
    )
    stationary = np.ones(len(who), dtype=bool)  # each rhythm began long before
    row, ts = _regular_orders(rng, window, cust.rhythm_shape[who], stationary)
    return who[row], ts


def _thinned(
    rng: np.random.Generator,
    cust: _Customers,
    who: IntArray,
    lo: IntArray,
    hi: IntArray,
    weight: Callable[[IntArray, IntArray], FloatArray],
) -> tuple[IntArray, IntArray]:
    """(customer, time) of the orders of customers `who`, each buying on [lo, hi) (one
    bound per customer) at order_rate x intensity(t) x weight(customer, t)."""
    # Inhomogeneous Poisson process by thinning: draw candidates at the peak rate, then
    # keep each with probability (actual rate / peak rate).
    span = hi - lo
    counts = rng.poisson(cust.order_rate[who] * MAX_INTENSITY * (span / DAY))
    pos = np.repeat(np.arange(len(who)), counts)
    idx = who[pos]
    ts = lo[pos] + (rng.random(len(pos)) * span[pos]).astype(np.int64)
    keep = rng.random(len(ts)) < _intensity(ts) * weight(idx, ts) / MAX_INTENSITY
    return idx[keep], ts[keep]


@dataclass(frozen=True)
class _Clock:
    """The seasonal intensity integrated over the period hour by hour (it is constant
    within a UTC hour): the operational time in which regular customers keep a rhythm."""

    origin: int  # the whole hour at or before the start, epoch seconds
    level: FloatArray  # intensity in each hour from the origin
    area: FloatArray  # integral of the intensity (in days) up to each hour's start
    moment: FloatArray  # integral of x * intensity, x in days since the origin, likewise

    @classmethod
    def over(cls, start_s: int, end_s: int) -> _Clock:
        origin = start_s - start_s % HOUR
        hours = np.arange(origin, end_s + HOUR, HOUR)  # one spare: the end is inside
        level = _intensity(hours)
        x0 = (hours - origin) / DAY
        x1 = x0 + HOUR / DAY
        area = np.concatenate([[0.0], np.cumsum(level * (x1 - x0))])
        moment = np.concatenate([[0.0], np.cumsum(level * (x1**2 - x0**2) / 2)])
        return cls(origin, level, area, moment)

    def integrals(self, ts: IntArray) -> tuple[FloatArray, FloatArray]:
        """The integrals of intensity and of x * intensity from the origin to `ts`."""
        hour = (ts - self.origin) // HOUR
        x0 = hour * (HOUR / DAY)
        dx = (ts - self.origin - hour * HOUR) / DAY
        level = self.level[hour]
        return self.area[hour] + level * dx, self.moment[hour] + level * dx * (x0 + dx / 2)

    def days(self, ts: IntArray) -> FloatArray:
        return (ts - self.origin) / DAY


@dataclass(frozen=True)
class _Window:
    """Customers' buying windows [lo, hi), each at rate x intensity x fade, where the
    fade is 1 before `fade_from` and (hi - t) / fade_len from it on, like `_fade`
    (fade_from is hi - fade_len for a churner, hi for no fade)."""

    clock: _Clock
    lo: IntArray
    hi: IntArray
    fade_from: IntArray  # clipped to [lo, hi]
    fade_len: IntArray
    rate: FloatArray
    area_lo: FloatArray  # the clock's integrals at lo and at fade_from
    area_fade: FloatArray
    moment_fade: FloatArray

    @classmethod
    def of(
        cls,
        clock: _Clock,
        *,
        lo: IntArray,
        hi: IntArray,
        fade_from: IntArray,
        fade_len: IntArray,
        rate: FloatArray,
    ) -> _Window:
        fade_from = np.clip(fade_from, lo, hi)
        area_fade, moment_fade = clock.integrals(fade_from)
        area_lo = clock.integrals(lo)[0]
        return cls(clock, lo, hi, fade_from, fade_len, rate, area_lo, area_fade, moment_fade)

    def expected(self, row: IntArray, ts: IntArray) -> FloatArray:
        """Expected orders in windows `row` from their start to `ts` (in [lo, hi])."""
        area, moment = self.clock.integrals(ts)
        steady = np.minimum(area, self.area_fade[row]) - self.area_lo[row]
        # In the fade: the integral of intensity x (hi - x) / fade_len from fade_from.
        hi_x = self.clock.days(self.hi[row])
        fading = hi_x * (area - self.area_fade[row]) - (moment - self.moment_fade[row])
        fading = np.maximum(fading, 0.0) / (self.fade_len[row] / DAY)  # < 0: before it
        return self.rate[row] * (steady + fading)

    @property
    def total(self) -> FloatArray:
        return self.expected(np.arange(len(self.lo)), self.hi)

    def time_of(self, row: IntArray, target: FloatArray) -> IntArray:
        """The second in which windows `row`'s expected orders reach `target` (< total)."""
        lo, hi = self.lo[row], self.hi[row]
        # Bisection, keeping expected(lo) <= target < expected(hi).
        for _ in range(int(np.max(hi - lo, initial=1)).bit_length()):
            mid = (lo + hi) // 2
            below = self.expected(row, mid) <= target
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return lo


def _regular_orders(
    rng: np.random.Generator, window: _Window, shape: FloatArray, stationary: BoolArray
) -> tuple[IntArray, IntArray]:
    """(window, time) of orders in a gamma renewal rhythm: gaps of one expected order
    (shape `shape`, mean 1) in operational time, where the window's expected orders tick
    at one per unit. So the mean rate is a Poisson buyer's, the seasons move the orders
    without blurring the rhythm, and a fading customer's gaps lengthen until churn.

    The first order is one gap in, or where `stationary` as in a rhythm running since long
    before: a uniform share of a length-biased gap (for gamma gaps, gamma of shape + 1).
    """
    total = window.total
    # Enough gaps to pass the total but for a vanishing chance (mean + 8 sd).
    n = np.ceil(total + 8 * np.sqrt(total / shape + 1) + 2).astype(np.int64)
    row = np.repeat(np.arange(len(total)), n)
    gaps = rng.gamma(shape[row], 1.0 / shape[row])
    first = np.cumsum(n) - n
    wait = rng.random(len(n)) * rng.gamma(shape + 1.0, 1.0 / shape)
    gaps[first] = np.where(stationary, wait, gaps[first])
    ends = np.cumsum(gaps)
    at = ends - np.repeat(ends[first] - gaps[first], n)
    keep = at < total[row]
    return row[keep], window.time_of(row[keep], at[keep])


def _order_details(
    rng: np.random.Generator,
    cust: _Customers,
    idx: IntArray,
    ts: IntArray,
    fade: FloatArray,
    start_s: int,
    end_s: int,
) -> _Orders:
    """Basket, payment and delivery of orders whose customer and time are drawn; `fade`
    is each customer's order-rate multiplier at the order (1: not fading)."""
    m = len(ts)
    prop = cust.propensity[idx]
    elapsed = (ts - start_s) / (end_s - start_s)
    # Baskets shrink for unhappy customers, over the year and again while they fade out.
    scale = cust.spend[idx] * (1.0 - 0.5 * prop * elapsed) * (0.55 + 0.45 * fade)
    n_items = 1 + rng.binomial(3, (0.32 - 0.2 * prop) * (0.6 + 0.4 * fade))

    payment = np.where(
        rng.random(m) < 0.85,
        cust.payment[idx],
        rng.choice(len(PAYMENT_METHODS), size=m, p=_norm(PAYMENT_WEIGHTS)),
    )

    p_problem = 0.03 + 0.2 * prop + 0.08 * (1.0 - fade)
    u = rng.random(m)
    problem_kind = rng.choice([DELAYED, RETURNED, FAILED], size=m, p=[0.6, 0.25, 0.15])
    status = np.full(m, DELIVERED)
    status = np.where(u < 0.015 + p_problem, problem_kind, status)
    status = np.where(u < 0.015, CANCELLED, status)
    # Orders at the very end of the period are still on their way.
    age = end_s - ts
    in_transit = np.isin(status, [DELIVERED, FAILED, RETURNED]) & (age < 3 * DAY)
    status = np.where(in_transit, SHIPPED, status)
    status = np.where((status != CANCELLED) & (age < DAY), PENDING, status)

    return _Orders(
        cust=idx,
        ts=ts,
        status=status,
        payment=payment,
        n_items=n_items,
        scale=scale,
        voucher=rng.random(m) < 0.003,
    )


def _draw_items(rng: np.random.Generator, orders: _Orders) -> _Items:
    item_order = np.repeat(np.arange(len(orders.ts)), orders.n_items)
    k = len(item_order)
    category = rng.choice(len(PRODUCT_CATEGORIES), size=k, p=_norm(CATEGORY_WEIGHTS))
    raw = (
        np.asarray(CATEGORY_MEDIAN_PRICE)[category]
        * orders.scale[item_order]
        * np.exp(rng.normal(0.0, 0.45, size=k))
    )
    # Shop prices end in .99.
    price_cents = np.maximum(1, np.rint(raw)).astype(np.int64) * 100 - 1
    price_cents[orders.voucher[item_order]] = 0
    quantity = 1 + rng.poisson(np.asarray(CATEGORY_EXTRA_UNITS)[category])
    # Integer cents, so the total is exactly sum(quantity * price) rounded to cents.
    total_cents = np.bincount(
        item_order, weights=quantity * price_cents, minlength=len(orders.ts)
    ).astype(np.int64)
    return _Items(
        category=category, quantity=quantity, price_cents=price_cents, total_cents=total_cents
    )


def _draw_tickets(
    rng: np.random.Generator, cust: _Customers, orders: _Orders, end_s: int
) -> _Tickets:
    n = len(cust.reg_s)
    # Complaints after a delivery problem; unhappy customers complain more readily.
    problem = np.isin(orders.status, [DELAYED, FAILED, RETURNED])
    complain = problem & (rng.random(len(orders.ts)) < 0.35 + 0.4 * cust.propensity[orders.cust])
    p_idx = orders.cust[complain]
    p_status = orders.status[complain]
    wait = np.where(
        p_status == RETURNED,
        4 * DAY + rng.exponential(4.0 * DAY, size=len(p_idx)),
        HOUR * 12 + rng.exponential(2.0 * DAY, size=len(p_idx)),
    )
    p_ts = orders.ts[complain] + wait.astype(np.int64)
    p_cat = np.where(
        (p_status == RETURNED) & (rng.random(len(p_idx)) < 0.7), TICKET_PRODUCT, TICKET_DELIVERY
    )

    # Other questions and complaints: a Poisson process over the active period.
    per_year = 0.3 + 2.5 * cust.propensity
    span = cust.active_to - cust.active_from
    counts = rng.poisson(per_year * span / (365.0 * DAY))
    s_idx = np.repeat(np.arange(n), counts)
    s_ts = cust.active_from[s_idx] + (rng.random(len(s_idx)) * span[s_idx]).astype(np.int64)
    s_cat = rng.choice(len(TICKET_CATEGORIES), size=len(s_idx), p=_norm(SPONTANEOUS_TICKET_WEIGHTS))

    idx = np.concatenate([p_idx, s_idx])
    ts = np.concatenate([p_ts, s_ts])
    category = np.concatenate([p_cat, s_cat])
    # Churned customers are silent: no complaint arrives after they have gone.
    inside = ts < cust.active_to[idx]
    idx, ts, category = idx[inside], ts[inside], category[inside]
    order = np.lexsort((idx, ts))
    return _ticket_details(rng, cust, idx[order], ts[order], category[order], end_s)


def _ticket_details(
    rng: np.random.Generator,
    cust: _Customers,
    idx: IntArray,
    ts: IntArray,
    category: IntArray,
    end_s: int,
) -> _Tickets:
    """Resolution and satisfaction of tickets whose customer, time and category are drawn."""
    t = len(ts)
    median = np.asarray(MEDIAN_RESOLUTION_HOURS)[category]
    hours = median * np.exp(rng.normal(0.0, 0.9, size=t))
    # Hundredths of an hour (36 s) so hours and resolved_ts agree exactly.
    resolution_cs = np.maximum(1, np.rint(hours * 100)).astype(np.int64)
    unresolved = (rng.random(t) < 0.10) | (ts + resolution_cs * 36 >= end_s)
    resolution_cs = np.where(unresolved, -1, resolution_cs)

    prop = cust.propensity[idx]
    latent = (
        4.6
        - 2.2 * prop
        - 0.45 * np.log2(1.0 + hours / 24.0)
        - 0.4 * (category == TICKET_DELIVERY)
        + rng.normal(0.0, 0.7, size=t)
    )
    satisfaction = np.clip(np.rint(latent), 1, 5).astype(np.int64)
    # Surveys go out on resolution, and not everyone answers.
    no_answer = unresolved | (rng.random(t) < 0.12)
    satisfaction = np.where(no_answer, 0, satisfaction)
    return _Tickets(
        cust=idx, ts=ts, category=category, resolution_cs=resolution_cs, satisfaction=satisfaction
    )


def _clone_tickets(
    rng: np.random.Generator,
    cust: _Customers,
    tickets: _Tickets,
    lo: int,
    hi: int,
    factor: float,
    end_s: int,
) -> _Tickets:
    """`factor - 1` more tickets (on average) for each ticket created in [lo, hi): from
    the same customer and category, at random times in [lo, hi) while they are active."""
    parents = np.flatnonzero((tickets.ts >= lo) & (tickets.ts < hi))
    parents = np.repeat(parents, rng.poisson(factor - 1.0, size=len(parents)))
    idx, category = tickets.cust[parents], tickets.category[parents]
    first = np.maximum(lo, cust.active_from[idx])
    last = np.minimum(hi, cust.active_to[idx])
    ts = first + (rng.random(len(idx)) * (last - first)).astype(np.int64)
    keep = last > first
    order = np.lexsort((idx[keep], ts[keep]))
    return _ticket_details(
        rng, cust, idx[keep][order], ts[keep][order], category[keep][order], end_s
    )


def _add_cohort(history: History, rng: np.random.Generator, n: int, lo: int, hi: int) -> None:
    """The customer_mix shift's cohort (see `Shift`): `n` customers registering in
    [lo, hi), each buying within hours and sometimes once more, gone at `hi`."""
    if n <= 0 or hi <= lo:
        return
    reg_s = np.sort(rng.integers(lo, hi, size=n))
    first = reg_s + rng.exponential(2.0 * HOUR, size=n).astype(np.int64)
    second = first + (rng.random(n) * np.maximum(hi - first, 0)).astype(np.int64)
    again = rng.random(n) < COHORT_SECOND_ORDER
    idx = np.concatenate([np.arange(n), np.flatnonzero(again)])
    ts = np.concatenate([first, second[again]])
    keep = ts < hi
    order = np.lexsort((idx[keep], ts[keep]))
    idx, ts = idx[keep][order], ts[keep][order]
    m = len(ts)
    orders = _Orders(
        cust=idx,
        ts=ts,
        status=np.where(rng.random(m) < 0.05, DELAYED, DELIVERED),
        payment=rng.choice(len(PAYMENT_METHODS), size=m, p=_norm(PAYMENT_WEIGHTS)),
        n_items=1 + rng.binomial(3, 0.2, size=m),
        scale=COHORT_SPEND * np.exp(rng.normal(0.0, 0.35, size=m)),
        voucher=np.zeros(m, dtype=bool),
    )
    items = _draw_items(rng, orders)
    base = len(history.customers)
    ids = [f"C{i:07d}" for i in range(base + 1, base + n + 1)]
    ages = np.clip(np.rint(rng.normal(*COHORT_AGE, size=n)), 18, 85).astype(np.int64)
    email = rng.random(n) < COHORT_EMAIL_VERIFIED
    phone = rng.random(n) < COHORT_PHONE_VERIFIED
    cohort = [
        Customer(
            customer_id=cid,
            registration_date=_utc(reg),
            age=age,
            email_verified=e,
            phone_verified=p,
        )
        for cid, reg, age, e, p in zip(
            ids, reg_s.tolist(), ages.tolist(), email.tolist(), phone.tolist(), strict=True
        )
    ]
    history.customers = _merged(history.customers, cohort, lambda c: c.registration_date)
    more = _build_orders(orders, items, ids, first_id=len(history.orders) + 1)
    history.orders = _merged(history.orders, more, lambda o: o.order_ts)
    gone = pd.Series(pd.to_datetime([hi] * n, unit="s", utc=True)).dt.as_unit("s")
    truth = pd.DataFrame(
        {
            "customer_id": ids,
            "churn_propensity": 1.0,
            "churn_ts": gone,
            "saved": False,
            "rhythm_shape": 1.0,
        }
    )
    history.truth = pd.concat([history.truth, truth], ignore_index=True)


def _acted_on_s(treatment: Treatment, history: History, customer_ids: list[str]) -> IntArray:
    """When each base customer was acted on, in epoch seconds (the end if never)."""
    known = {c.customer_id for c in history.customers}
    unknown = sorted(set(treatment.acted_on) - known)
    if unknown:
        raise ValueError(f"treatment acted on an unknown customer: {unknown[0]}")
    end_s = math.ceil(history.end.timestamp())
    acted_s = np.full(len(customer_ids), end_s, dtype=np.int64)
    position = {cid: i for i, cid in enumerate(customer_ids)}
    for cid, when in treatment.acted_on.items():
        if cid in position:  # a cohort's customer: never saved (see `Treatment`)
            # Whole seconds down: events are, and those at the instant came before it.
            acted_s[position[cid]] = math.floor(when.timestamp())
    return acted_s


def _treat(
    history: History,
    rng: np.random.Generator,
    treatment: Treatment,
    cust: _Customers,
    base: _Orders,
    customer_ids: list[str],
    value_shifts: list[tuple[int, int, float]],
) -> None:
    """Save acted-on churners (see `Treatment`): from the instant they were acted on, add
    the orders their fade took away, so they buy at their full rate to the end."""
    acted_s = _acted_on_s(treatment, history, customer_ids)
    start_s, end_s = (math.ceil(t.timestamp()) for t in (history.start, history.end))
    # One draw per customer in customer order: who is saved depends neither on the
    # mapping's order nor on who else was acted on.
    lucky = rng.random(len(customer_ids)) < treatment.effect
    who = np.flatnonzero(cust.churned & (acted_s < end_s) & lucky)
    if len(who) == 0:
        return
    regular = cust.rhythm_shape[who] != 1.0
    lo = np.maximum(acted_s[who] + 1, cust.active_from[who])
    hi = np.full(len(who), end_s, dtype=np.int64)
    # Base orders stay; these make up the rest: rate x (1 - fade), all of it after churn.
    poisson = ~regular
    idx, ts = _thinned(
        rng, cust, who[poisson], lo[poisson], hi[poisson], lambda i, t: 1.0 - _fade(cust, i, t)
    )
    if regular.any():
        more_idx, more_ts = _resumed_rhythm(
            rng, cust, base, who[regular], lo[regular], start_s, end_s
        )
        idx, ts = np.concatenate([idx, more_idx]), np.concatenate([ts, more_ts])
    order = np.lexsort((idx, ts))
    idx, ts = idx[order], ts[order]
    # Won back, they buy like a customer who is not fading out.
    orders = _order_details(rng, cust, idx, ts, np.ones(len(ts)), start_s, end_s)
    _scale_values(orders, value_shifts)
    items = _draw_items(rng, orders)
    # Ids after every existing order's, like a shift's: nothing else is renumbered.
    more = _build_orders(orders, items, customer_ids, first_id=len(history.orders) + 1)
    history.orders = _merged(history.orders, more, lambda o: o.order_ts)
    # Base customers are the truth's first rows, in customer order.
    history.truth.loc[who, "churn_ts"] = pd.NaT
    history.truth.loc[who, "saved"] = True


def _resumed_rhythm(
    rng: np.random.Generator,
    cust: _Customers,
    base: _Orders,
    who: IntArray,
    lo: IntArray,
    start_s: int,
    end_s: int,
) -> tuple[IntArray, IntArray]:
    """(customer, time) of saved regular customers' orders from `lo` on: their base
    orders stay, and from the last of them after `lo` (one gap on), or from `lo` if none
    (a rhythm picked up at a random phase), they keep their rhythm at the full rate."""
    last = np.full(len(cust.reg_s), -1, dtype=np.int64)
    np.maximum.at(last, base.cust, base.ts)
    stationary = last[who] < lo
    window = _Window.of(
        _Clock.over(start_s, end_s),
        lo=np.where(stationary, lo, last[who]),
        hi=np.full(len(who), end_s, dtype=np.int64),
        fade_from=np.full(len(who), end_s, dtype=np.int64),
        fade_len=cust.fade_s[who],
        rate=cust.order_rate[who],
    )
    row, ts = _regular_orders(rng, window, cust.rhythm_shape[who], stationary)
    return who[row], ts


def _build_customers(rng: np.random.Generator, cust: _Customers, ids: list[str]) -> list[Customer]:
    n = len(ids)
    loyalty = 1.0 - cust.propensity
    ages = np.clip(np.rint(rng.normal(37.0, 12.0, size=n)), 18, 85).astype(np.int64)
    age_missing = rng.random(n) < 0.03
    gender = rng.choice(len(GENDERS), size=n, p=_norm(GENDER_WEIGHTS))
    gender_missing = rng.random(n) < 0.02
    city = rng.choice(len(CITIES), size=n, p=_norm(CITY_WEIGHTS))
    city_missing = rng.random(n) < 0.05
    # Engaged customers complete their profile.
    email = rng.random(n) < 0.42 + 0.55 * loyalty
    phone = rng.random(n) < 0.05 + 0.75 * loyalty
    return [
        Customer(
            customer_id=cid,
            registration_date=_utc(reg),
            age=None if a_miss else age,
            gender=None if g_miss else GENDERS[g],
            city=None if c_miss else CITIES[c],
            email_verified=e,
            phone_verified=p,
        )
        for cid, reg, age, a_miss, g, g_miss, c, c_miss, e, p in zip(
            ids,
            cust.reg_s.tolist(),
            ages.tolist(),
            age_missing.tolist(),
            gender.tolist(),
            gender_missing.tolist(),
            city.tolist(),
            city_missing.tolist(),
            email.tolist(),
            phone.tolist(),
            strict=True,
        )
    ]


# Orders and items are built with positional arguments (in the structs' field order):
# for millions of structs that is about three times faster than keywords.


def _build_orders(
    orders: _Orders, items: _Items, customer_ids: list[str], first_id: int = 1
) -> list[Order]:
    # OrderItem(product_category, quantity, price)
    all_items = [
        OrderItem(PRODUCT_CATEGORIES[c], q, p / 100)
        for c, q, p in zip(
            items.category.tolist(),
            items.quantity.tolist(),
            items.price_cents.tolist(),
            strict=True,
        )
    ]
    bounds = np.concatenate([[0], np.cumsum(orders.n_items)]).tolist()
    # Order(order_id, customer_id, order_ts, total_amount, payment_method,
    #       delivery_status, currency, items)
    return [
        Order(
            f"O{i:09d}",
            customer_ids[c],
            _utc(ts),
            total / 100,
            PAYMENT_METHODS[pay],
            DELIVERY_STATUSES[status],
            "USD",
            all_items[lo:hi],
        )
        for i, (c, ts, total, pay, status, lo, hi) in enumerate(
            zip(
                orders.cust.tolist(),
                orders.ts.tolist(),
                items.total_cents.tolist(),
                orders.payment.tolist(),
                orders.status.tolist(),
                bounds[:-1],
                bounds[1:],
                strict=True,
            ),
            start=first_id,
        )
    ]


def _build_tickets(
    tickets: _Tickets, customer_ids: list[str], first_id: int = 1
) -> list[SupportTicket]:
    out = []
    for i, (c, ts, cat, res_cs, score) in enumerate(
        zip(
            tickets.cust.tolist(),
            tickets.ts.tolist(),
            tickets.category.tolist(),
            tickets.resolution_cs.tolist(),
            tickets.satisfaction.tolist(),
            strict=True,
        ),
        start=first_id,
    ):
        resolved = res_cs >= 0
        out.append(
            SupportTicket(
                ticket_id=f"T{i:08d}",
                customer_id=customer_ids[c],
                created_ts=_utc(ts),
                category=TICKET_CATEGORIES[cat],
                resolved_ts=_utc(ts + res_cs * 36) if resolved else None,
                resolution_time_hours=res_cs / 100 if resolved else None,
                satisfaction_score=score or None,
            )
        )
    return out


def _utc(epoch_seconds: int) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


def _norm(weights: tuple[float, ...] | list[float]) -> FloatArray:
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum()
