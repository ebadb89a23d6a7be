"""Open-loop load against real model endpoints: requests sent on a fixed schedule, latency timed from the schedule.

A closed-loop client (Locust, a benchmark loop, `hey` with a fixed number of workers) sends the next request
only after the last one answered: when the server stalls, the client stops sending, and the requests that users
would have sent during the stall are never timed. That is coordinated omission: a 1 s stall shows as one slow
sample among thousands. Here every arrival has an intended send time fixed before the run (`schedule`: constant
spacing, or Poisson with a seed) and is sent then whatever the server does; its latency runs from the intended
time (wrk2's correction), so a request that the generator itself sent late still counts its wait. Each sample
keeps both: `latency_ms = done - intended` and `service_ms = done - sent`; their difference is the generator's
own lag, which the summary checks (`generator`).

Two targets (old and new deployments) get the same schedule and the same bodies: arrival i goes to the first at
t_i and to the second half a mean gap later, so both see the same arrival process and neither always sees a
burst first. Each target has its own connection pool and its own in-flight cap, so one that stalls cannot
starve the other.

The timer: asyncio's epoll selector rounds every wait up to a whole millisecond, which sends each request 0.6 to
0.8 ms late at the median, a bias of 10% on a 5 ms model. The loop here waits the whole milliseconds in epoll and
the rest in `select()` on the epoll descriptor itself (microsecond timeouts): the median send lag is 0.15 to 0.4 ms
on this project's 2-core machine (50 to 2,000 requests/s), without spinning a core. The generator sustains about
2,000 requests/s on one core there; past that its lag grows without bound and the self-check says so.

Outcomes: `ok`; `http_error` (a status outside 2xx); `bad_response` (2xx, but a body the protocol's check
refuses, or a broken HTTP answer); `timeout` (no full answer in `timeout_s` from the send); `connection_error`
(refused, reset, unreachable); `dropped` (`max_in_flight` requests of that target were already outstanding: the
arrival is not sent, so a stalled server cannot make the client queue without bound); `grpc_error` (a gRPC status
other than OK, DEADLINE_EXCEEDED and UNAVAILABLE, which are `timeout` and `connection_error`). A sample's `status` is
the HTTP status code, or the gRPC status code's name ("OK", "INTERNAL"), and empty when no answer came.

gRPC (`grpc-v2`, profilers/grpc_v2.py) runs in the same loop on the same schedule: one `grpc.aio` channel per target
in place of the aiohttp session, the call's deadline `timeout_s`, the same in-flight cap and time stamps.

Everything statistical is derived from the raw samples afterwards (`LoadResult.summary`).
"""

from __future__ import annotations

import asyncio
import math
import resource
import select
import selectors
import time
from dataclasses import dataclass, field
from typing import Callable

import aiohttp
import numpy as np
import pandas as pd
from hdrh.histogram import HdrHistogram

from diagnose.core.errors import UserError, first_line
from diagnose.core.times import utc_now
from profilers.protocols import GRPC_V2, PROTOCOLS
from profilers.protocols import ok as response_ok

ARRIVALS = ("constant", "poisson")
OUTCOMES = ("ok", "http_error", "timeout", "connection_error", "bad_response", "dropped", "grpc_error")
OK, HTTP_ERROR, TIMEOUT, CONNECTION_ERROR, BAD_RESPONSE, DROPPED, GRPC_ERROR = range(len(OUTCOMES))
QUANTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))
STABLE_WINDOWS = 3  # perf_analyzer: the last three measurement windows ...
STABLE_SPREAD = 0.10  # ... each within 10% of their mean, in latency and in throughput
MIN_LAG_MS = 2.0  # the send lag p90 the generator tolerates before it calls itself the bottleneck ...
LAG_SHARE = 0.10  # ... or this share of the server's median service time, whichever is larger
LEAD_S = 0.05  # the schedule starts this long after the sessions are made, so arrival 0 is not already late
SIGNIFICANT_DIGITS = 3


@dataclass(frozen=True)
class Target:
    name: str  # "old" / "new" / "" for a single endpoint
    url: str  # the full endpoint URL (protocols.endpoint); grpc://host:port for gRPC
    protocol: str
    bodies: tuple[bytes, ...] = field(repr=False)
    headers: dict = field(default_factory=dict, repr=False)  # e.g. Authorization: sent, never written nor shown

    def __post_init__(self):
        object.__setattr__(self, "bodies", tuple(self.bodies))
        if self.protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol {self.protocol!r}; use one of {', '.join(PROTOCOLS)}")
        schemes = ("grpc://",) if self.protocol == GRPC_V2 else ("http://", "https://")
        if not self.url.startswith(schemes):
            raise UserError(f"endpoint {self.url!r} is not a {' or '.join(schemes)} URL, as {self.protocol} needs")
        if not self.bodies:
            raise UserError(f"no request bodies for {self.url}")


@dataclass(frozen=True)
class LoadPlan:
    rate_rps: float
    duration_s: float  # measured part, after warm-up
    warmup_s: float = 5.0
    arrival: str = "constant"  # or "poisson"
    timeout_s: float = 10.0
    seed: int = 0
    window_s: float = 5.0  # stability windows, as perf_analyzer's measurement interval
    max_in_flight: int = 2000  # per target; beyond it new arrivals are dropped by the client

    def __post_init__(self):
        checks = ((self.rate_rps > 0, "rate_rps must be above 0"), (self.duration_s > 0, "duration_s must be above 0"),
                  (self.warmup_s >= 0, "warmup_s cannot be negative"), (self.timeout_s > 0, "timeout_s must be above 0"),
                  (self.window_s > 0, "window_s must be above 0"), (self.max_in_flight >= 1, "max_in_flight must be 1 or more"),
                  (self.arrival in ARRIVALS, f"arrival must be one of {', '.join(ARRIVALS)}, not {self.arrival!r}"))
        for good, message in checks:
            if not good:
                raise UserError(message)

    @property
    def gap_s(self) -> float:
        return 1.0 / self.rate_rps


def schedule(plan: LoadPlan) -> np.ndarray:
    """Intended send times (s from the start) of the warm-up and the measured part: every 1/rate seconds, or
    exponential gaps of mean 1/rate drawn from `seed` (Poisson arrivals: the same seed gives the same run)."""
    total = plan.warmup_s + plan.duration_s
    if plan.arrival == "constant":
        return np.arange(math.ceil(total * plan.rate_rps - 1e-9)) * plan.gap_s
    rng = np.random.default_rng(plan.seed)
    expected = total * plan.rate_rps
    times = np.cumsum(rng.exponential(plan.gap_s, size=int(expected + 10 * math.sqrt(expected) + 10)))
    while times[-1] < total:  # a draw short of the end (about one seed in a million): extend it
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(plan.gap_s, size=len(times)))])
    return times[times < total]


class _FineSelector(selectors.EpollSelector):
    """epoll for the whole milliseconds of a wait, then `select()` on the epoll descriptor for the rest: epoll
    rounds a timeout up to a whole millisecond, select() takes microseconds, and the epoll descriptor is readable
    as soon as any registered socket is (select() cannot take a descriptor past 1024: then epoll alone)."""

    def select(self, timeout=None):
        if timeout is None or timeout <= 0 or self.fileno() >= 1024:
            return super().select(timeout)
        deadline = time.monotonic() + timeout
        whole_ms = int(timeout * 1e3)
        if whole_ms:
            ready = super().select((whole_ms - 0.5) / 1e3)  # epoll rounds this up to exactly whole_ms
            if ready:
                return ready
        rest = deadline - time.monotonic()
        if rest > 0:
            select.select([self.fileno()], [], [], rest)
        return super().select(0)


def _event_loop() -> asyncio.AbstractEventLoop:
    selector = _FineSelector() if hasattr(selectors, "EpollSelector") else selectors.DefaultSelector()
    return asyncio.SelectorEventLoop(selector)


class _Run:
    """One load run: the arrivals of every target in one array, row r = arrival r // k of target r % k."""

    def __init__(self, targets: list[Target], plan: LoadPlan, progress: Callable[[float], None] | None):
        self.targets, self.plan, self.progress = targets, plan, progress
        self.k = len(targets)
        times = schedule(plan)
        self.scheduled = np.repeat(times, self.k)  # the arrival's own time (warm-up or not), the same for all targets
        offsets = np.arange(self.k) * (plan.gap_s / 2)  # the second target half a mean gap after the first
        self.intended = self.scheduled + np.tile(offsets, len(times))
        n = len(self.intended)
        self.sent, self.done = np.full(n, np.nan), np.full(n, np.nan)
        self.status = np.full(n, "", dtype=object)  # the HTTP status code or the gRPC code's name; "" without one
        self.outcome = np.full(n, OK, dtype=np.int8)
        self.error = [""] * n
        self.in_flight = [0] * self.k
        self.tasks: set[asyncio.Task] = set()
        self.failure: BaseException | None = None
        self.start = 0.0

    async def main(self) -> None:
        sessions = [self._session(t) for t in self.targets]
        try:
            self.start = asyncio.get_running_loop().time() + LEAD_S
            reporter = asyncio.ensure_future(self._report()) if self.progress else None
            await self._tick(sessions)
            while self.tasks:  # every request ends within timeout_s of its send
                await asyncio.wait(set(self.tasks))
            if reporter:
                reporter.cancel()
                self.progress(1.0)
        finally:
            for session in sessions:
                await session.close()
        if self.failure is not None:
            raise self.failure

    def _session(self, target: Target):
        """One pool per target, as large as its in-flight cap (aiohttp's default of 100 connections would queue
        requests inside the client). No Accept-Encoding: a server asked for gzip spends its CPU compressing. A gRPC
        target gets its own channel instead (HTTP/2: every call in flight on one connection)."""
        if target.protocol == GRPC_V2:
            from profilers.grpc_v2 import Client

            return Client(target.url.removeprefix("grpc://"), self.plan.timeout_s, target.headers)
        connector = aiohttp.TCPConnector(limit=self.plan.max_in_flight, limit_per_host=0)
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self.plan.timeout_s),
                                     headers={"Content-Type": "application/json", **target.headers},
                                     skip_auto_headers=("Accept-Encoding",))

    async def _report(self) -> None:
        total = self.plan.warmup_s + self.plan.duration_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            self.progress(min(1.0, max(0.0, loop.time() - self.start) / total))

    async def _tick(self, sessions: list) -> None:
        """Launch each arrival at its time. Behind schedule, launch at once but yield after each, so the launched
        requests go out (their lag is then measured, not hidden in a burst)."""
        loop = asyncio.get_running_loop()
        for r in np.argsort(self.intended, kind="stable").tolist():
            await asyncio.sleep(max(0.0, self.start + self.intended[r] - loop.time()))
            self._launch(r, sessions[r % self.k])

    def _launch(self, r: int, session) -> None:
        j = r % self.k
        if self.in_flight[j] >= self.plan.max_in_flight:
            self.outcome[r] = DROPPED
            self.error[r] = f"{self.plan.max_in_flight} requests already in flight"
            return
        self.in_flight[j] += 1
        task = asyncio.ensure_future(self._send(r, session))
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        """A request's task ended. _send records every failure of the request itself; anything else is a bug and
        ends the run (retrieved here, so asyncio does not log it on its own)."""
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self.failure is None:
            self.failure = task.exception()

    async def _send(self, r: int, session: aiohttp.ClientSession) -> None:
        """One request. Done is stamped when the last byte of the answer is in, before the protocol's check
        parses it: the parse is the client's work, not the server's."""
        target = self.targets[r % self.k]
        body = target.bodies[(r // self.k) % len(target.bodies)]
        loop = asyncio.get_running_loop()
        self.sent[r] = loop.time() - self.start
        if target.protocol == GRPC_V2:
            await self._send_grpc(r, session, body)
            return
        try:
            async with session.post(target.url, data=body) as response:
                payload = await response.read()
        except TimeoutError:  # before OSError: TimeoutError is one
            self.outcome[r], self.error[r] = TIMEOUT, f"no answer within {self.plan.timeout_s:g} s"
            return
        except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError) as exc:
            self.outcome[r], self.error[r] = BAD_RESPONSE, first_line(exc, 120)
            return
        except (aiohttp.ClientError, OSError) as exc:
            self.outcome[r], self.error[r] = CONNECTION_ERROR, first_line(exc, 120)
            return
        finally:
            self.done[r] = loop.time() - self.start
            self.in_flight[r % self.k] -= 1
        self.status[r] = str(response.status)
        reason = response_ok(response.status, payload, target.protocol)
        if reason is not None:
            self.outcome[r] = HTTP_ERROR if not 200 <= response.status < 300 else BAD_RESPONSE
            self.error[r] = reason

    async def _send_grpc(self, r: int, client, body: bytes) -> None:
        """One ModelInfer call on the target's channel (profilers/grpc_v2.py): done is stamped when the answer or
        the status is in, before the response is parsed; the status code's name is the sample's status."""
        from profilers.grpc_v2 import outcome

        loop = asyncio.get_running_loop()
        try:
            code, answer = await client.infer(body)
        finally:
            self.done[r] = loop.time() - self.start
            self.in_flight[r % self.k] -= 1
        result, reason = outcome(code, answer, self.plan.timeout_s)
        self.status[r], self.outcome[r], self.error[r] = code, OUTCOMES.index(result), reason

    def samples(self) -> pd.DataFrame:
        names = np.array([t.name for t in self.targets], dtype=object)
        index = np.arange(len(self.intended))
        return pd.DataFrame({
            "target": names[index % self.k], "request_index": index // self.k, "intended_s": self.intended,
            "sent_s": self.sent, "done_s": self.done, "latency_ms": (self.done - self.intended) * 1e3,
            "service_ms": (self.done - self.sent) * 1e3, "status": self.status,
            "outcome": np.array(OUTCOMES, dtype=object)[self.outcome], "warmup": self.scheduled < self.plan.warmup_s,
            "error": self.error,
        })


def _allow_descriptors(needed: int) -> None:
    """Raise this process's soft limit of open files to `needed` (within the hard limit): every request in flight
    holds a socket, and at the usual soft limit of 1024 a cap of 2000 in flight would turn into "too many open
    files" errors charged to the server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def run_load(targets: list[Target], plan: LoadPlan, progress: Callable[[float], None] | None = None) -> LoadResult:
    """Drive one target, or two (old, new) with one interleaved schedule; see the module doc. Synchronous: runs
    its own event loop, so it cannot be called from inside a running one. Lasts warm-up + duration, plus at most
    `timeout_s` for the last answers. `progress(fraction)` is called about once a second, and with 1.0 at the end."""
    if len(targets) not in (1, 2):
        raise UserError(f"a load test drives one target or two (old and new), not {len(targets)}")
    if len({t.name for t in targets}) != len(targets):
        raise UserError("two targets need different names (old and new)")
    run = _Run(list(targets), plan, progress)
    _allow_descriptors(len(targets) * plan.max_in_flight + 256)
    started_at = utc_now()
    with asyncio.Runner(loop_factory=_event_loop) as runner:
        runner.run(run.main())
    return LoadResult(samples=run.samples(), plan=plan, started_at=started_at)


def quantiles(values_ms) -> dict:
    """p50/p90/p99/p99.9, mean and max of latencies in ms, read from an HDR histogram of microseconds with 3
    significant digits (HdrHistogram's usual setting: every value kept within 0.1%, at any magnitude)."""
    values = np.asarray(values_ms, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {**{name: None for name, _ in QUANTILES}, "mean": None, "max": None}
    micros = np.maximum(np.rint(values * 1e3), 1).astype(np.int64)
    histogram = HdrHistogram(1, max(2, int(micros.max())), SIGNIFICANT_DIGITS)
    for value, count in zip(*np.unique(micros, return_counts=True), strict=True):
        histogram.record_value(int(value), int(count))
    out = {name: histogram.get_value_at_percentile(q) / 1e3 for name, q in QUANTILES}
    return {**out, "mean": histogram.get_mean_value() / 1e3, "max": histogram.get_max_value() / 1e3}


def _counts(values) -> dict:
    series = pd.Series(values)
    return {str(k): int(v) for k, v in series.value_counts().sort_index().items()}


@dataclass(frozen=True)
class LoadResult:
    samples: pd.DataFrame  # one row per arrival (see _Run.samples)
    plan: LoadPlan
    started_at: str  # UTC ISO time

    def summary(self, target: str = "") -> dict:
        """What one target's measured (non-warm-up) arrivals show: counts, errors by outcome and by HTTP status
        (with one example reason per outcome), latency and service quantiles of the ok requests, the achieved
        rate against the target, stability windows and the generator's self-check."""
        rows = self._rows(target)
        measured = rows[~rows["warmup"]]
        good = measured[measured["outcome"] == "ok"]
        errors = measured[measured["outcome"] != "ok"]
        windows = self.windows(rows)
        stable, why = stability(windows)
        return {
            "target": target, "arrival": self.plan.arrival, "target_rps": self.plan.rate_rps,
            "measured_s": self.plan.duration_s, "requests": int(len(measured)), "ok": int(len(good)),
            "achieved_rps": self._completions(rows, 0.0, self.plan.duration_s) / self.plan.duration_s,
            "errors": _counts(errors["outcome"]),
            "statuses": _counts(measured.loc[measured["status"] != "", "status"]),
            "error_examples": errors.drop_duplicates("outcome").set_index("outcome")["error"].to_dict(),
            "latency_ms": quantiles(good["latency_ms"]), "service_ms": quantiles(good["service_ms"]),
            "windows": windows, "stable": stable, "unstable_reason": why,
            "generator": self.generator(measured),
        }

    def _rows(self, target: str) -> pd.DataFrame:
        rows = self.samples[self.samples["target"] == target]
        if rows.empty:
            names = ", ".join(repr(t) for t in self.samples["target"].unique())
            raise UserError(f"no target named {target!r} in this load result (it has {names})")
        return rows

    def _completions(self, rows: pd.DataFrame, start_s: float, end_s: float) -> int:
        """ok answers received in [start, end) of the measured part (s from its start), whatever their arrival."""
        done = rows.loc[rows["outcome"] == "ok", "done_s"] - self.plan.warmup_s
        return int(((done >= start_s) & (done < end_s)).sum())

    def windows(self, rows: pd.DataFrame) -> list[dict]:
        """The measured part cut into `window_s` windows (one shorter window when the run is shorter; a tail shorter
        than a window belongs to none): arrivals and the p99 of their ok latencies by intended time, and the
        rate of ok answers received in the window (the server's throughput, which an overload caps), and the
        arrivals that failed (what a window with a swap or a restart in it shows)."""
        width = min(self.plan.window_s, self.plan.duration_s)
        count = max(1, int(self.plan.duration_s / width + 1e-9))
        offset = rows["intended_s"] - self.plan.warmup_s
        out = []
        for k in range(count):
            start, end = k * width, (k + 1) * width
            inside = rows[(offset >= start) & (offset < end) & ~rows["warmup"]]
            q = quantiles(inside.loc[inside["outcome"] == "ok", "latency_ms"])
            out.append({"start_s": start, "requests": int(len(inside)),
                        "achieved_rps": self._completions(rows, start, end) / width, "p50_ms": q["p50"],
                        "p99_ms": q["p99"], "errors": int((inside["outcome"] != "ok").sum())})
        return out

    def generator(self, measured: pd.DataFrame) -> dict:
        """The generator's self-check: it was the bottleneck when it dropped arrivals at `max_in_flight`, or when
        its send lag (sent - intended) p90 exceeds max(2 ms, 10% of the server's median service time).

        Why p90 and 2 ms: a generator that cannot keep up falls further behind with every arrival, so its lag
        grows without bound and shows in the p90 at once (tens to hundreds of ms). A generator that keeps up
        still sends the odd request late when the OS runs something else on its core: on a busy 2-core machine
        that puts the lag p99 at 0.7 to 4 ms at any rate, while its p90 stays at 0.3 to 1.1 ms (50 to 2,000
        requests/s against a 5 ms server). A p99 rule would blame the generator for its machine; the p99 is
        reported beside it (`lag_p99_ms`) as the size of that noise in the latencies. 10% of the median service
        time keeps a slow model from excusing a lag that would still bend its percentiles."""
        lag = (measured["sent_s"] - measured["intended_s"]).dropna().to_numpy() * 1e3
        dropped = int((measured["outcome"] == "dropped").sum())
        service = measured.loc[measured["outcome"] == "ok", "service_ms"]
        limit = max(MIN_LAG_MS, LAG_SHARE * float(service.median())) if len(service) else MIN_LAG_MS
        p50, p90, p99, top = np.percentile(lag, [50, 90, 99, 100]) if len(lag) else (0.0,) * 4
        out = {"lag_p50_ms": float(p50), "lag_p90_ms": float(p90), "lag_p99_ms": float(p99), "lag_max_ms": float(top),
               "lag_limit_ms": limit, "dropped": dropped}
        if dropped:
            reason = (f"{dropped} arrivals dropped: {self.plan.max_in_flight} requests were already in flight "
                      "(max_in_flight), so the client, not the schedule, decided what was sent")
        elif p90 > limit:
            reason = (f"send lag p90 {p90:.2f} ms is over {limit:.2f} ms: the generator could not keep "
                      f"{self.plan.rate_rps:g} requests/s on this machine, and its delay is in the latencies")
        else:
            reason = f"send lag p90 {p90:.2f} ms is within {limit:.2f} ms (p99 {p99:.2f} ms), and no arrival was dropped"
        return {**out, "bottleneck": bool(dropped or p90 > limit), "reason": reason}


def stability(windows: list[dict]) -> tuple[bool, str | None]:
    """perf_analyzer's rule: the last three windows' latency and achieved rate each lie within 10% of their mean.
    The latency is each window's median, as perf_analyzer's default judges the average: a window of a few hundred
    requests has its p99 in its top two or three samples, which moves by more than 10% on a quiet server (measured:
    unstable in 3 of 5 runs of a steady 5 ms server with 150 requests a window), while a queue that grows moves the
    median too. The p99 of each window is reported beside it. Returns (stable, the reason when not)."""
    if len(windows) < STABLE_WINDOWS:
        return False, f"{len(windows)} measurement window(s), fewer than {STABLE_WINDOWS}: measure longer"
    last = windows[-STABLE_WINDOWS:]
    if any(w["p50_ms"] is None for w in last):
        return False, "a window among the last three had no successful request"
    for key, label in (("p50_ms", "median latency"), ("achieved_rps", "rate")):
        values = np.array([w[key] for w in last], dtype=float)
        mean = values.mean()
        if mean <= 0 or np.any(np.abs(values - mean) > STABLE_SPREAD * mean):
            shown = " / ".join(f"{v:.4g}" for v in values)
            return False, f"{label} of the last three windows ({shown}) is not within 10% of their mean ({mean:.4g})"
    return True, None
