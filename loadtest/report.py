"""The bench's measurements and their markdown report, with the issue's targets marked."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

Result = dict[str, Any]
ROWS = ("direct", "empty Starlette", "Starlette + aiohttp proxy", "gateway, affinity off",
        "gateway, affinity on", "LiteLLM")
GATEWAY = "gateway, affinity on"
STALL_MS = 1000.0  # a silence this long inside a paced stream (50 ms between events) is a stall


@dataclass
class Measurements:
    machine: str = ""
    rounds: int = 1
    throughput: dict[str, Result] = field(default_factory=dict)  # 16 connections, closed loop
    cpu: dict[str, float] = field(default_factory=dict)  # server CPU us per request, best round
    single: dict[str, Result] = field(default_factory=dict)  # 1 connection
    half: dict[str, Result] = field(default_factory=dict)  # open loop at half saturation
    half_rate: int = 0
    streams: dict[str, Result] = field(default_factory=dict)  # 1 connection, streaming
    stream_events: int = 0  # SSE events the upstream sends per stream
    paced: Result = field(default_factory=dict)  # 256 concurrent paced streams
    paced_shape: dict[str, int] = field(default_factory=dict)
    redis_commands: dict[str, int] = field(default_factory=dict)
    redis_requests: int = 0
    pin_statuses: dict[str, int] = field(default_factory=dict)
    rss_idle: float = 0.0
    rss_after: float = 0.0
    peers: dict[str, str] = field(default_factory=dict)  # peer -> version

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ratio(self, name: str) -> float:
        return float(self.throughput[name]["rps"] / self.throughput["empty Starlette"]["rps"])

    def cpu_ratio(self, name: str) -> float:
        """Throughput on one core as CPU allows it: empty Starlette's CPU per request / this."""
        return self.cpu["empty Starlette"] / max(self.cpu[name], 1e-9)

    def added(self, name: str) -> float:
        return float(self.single[name]["p50_ms"] - self.single["direct"]["p50_ms"])

    def added_ttft(self) -> float:
        return float(self.streams[GATEWAY]["ttft_p50_ms"] - self.streams["direct"]["ttft_p50_ms"])

    def commands_per_request(self) -> float:
        return sum(self.redis_commands.values()) / max(1, self.redis_requests)

    def events_match(self) -> bool:
        expected = {str(self.stream_events)}
        return all(set(self.streams[n]["events"]) == expected for n in ("direct", GATEWAY))

    def paced_ok(self) -> bool:
        events = {str(self.paced_shape.get("chunks", 0) + 1)}
        paced = self.paced
        return bool(paced.get("ok") == self.paced_shape.get("connections")
                    and set(paced.get("events", {})) == events
                    and paced.get("max_gap_ms", STALL_MS) < STALL_MS)


def _mark(ok: bool, goal: bool | None = None) -> str:
    if not ok:
        return "**unmet**"
    return "met" if goal is None else ("met (goal met too)" if goal else "met (goal unmet)")


def render(m: Measurements) -> str:
    lines = [
        "## Benchmark (`make bench`)", "",
        f"Machine: {m.machine}.",
        "Servers pinned to one core; load generator (loadtest/loadgen.py), canned-answer "
        "upstream (loadtest/upstream.py) and Redis to the other. One uvicorn worker "
        "(uvloop, httptools) per server; small chat body; 16 connections unless noted. "
        "Each server ran in every one of "
        f"{m.rounds} interleaved rounds; the table keeps its best round (other load on the "
        "machine only makes a round worse). CPU us/req is the server process's CPU time per "
        "request, which such load barely moves: `x empty (CPU)` is the throughput ratio the "
        "servers' own costs allow on one core.", "",
        "| server | req/s | x empty | CPU us/req | x empty (CPU) | p50 ms | p99 ms "
        "| 1-conn p50 ms | added p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in [*[r for r in ROWS if r in m.throughput],
                 *[r for r in m.throughput if r not in ROWS]]:
        t, s = m.throughput[name], m.single[name]
        label = f"{name} {m.peers[name]}" if name in m.peers else name
        lines.append(
            f"| {label} | {t['rps']:,.0f} | {m.ratio(name):.2f}x | {m.cpu[name]:.0f} | "
            f"{m.cpu_ratio(name):.2f}x | {t['p50_ms']:.2f} | "
            f"{t['p99_ms']:.2f} | {s['p50_ms']:.3f} | "
            f"{'-' if name == 'direct' else f'{m.added(name):+.3f}'} |")
    half, direct_half = m.half[GATEWAY], m.half["direct"]
    gw, direct = m.streams[GATEWAY], m.streams["direct"]
    paced, shape = m.paced, m.paced_shape
    commands = ", ".join(f"{k} {v}" for k, v in sorted(m.redis_commands.items())) or "none"
    lines += [
        "", "| measurement (gateway, affinity on) | value |", "|---|---|",
        f"| p50 / p99 at half-saturating load ({m.half_rate:,} req/s, open loop) | "
        f"{half['p50_ms']:.2f} / {half['p99_ms']:.2f} ms (direct at the same rate: "
        f"{direct_half['p50_ms']:.2f} / {direct_half['p99_ms']:.2f} ms) |",
        f"| streaming TTFT p50, 1 connection | {gw['ttft_p50_ms']:.3f} ms (direct "
        f"{direct['ttft_p50_ms']:.3f} ms, added {m.added_ttft():+.3f} ms) |",
        f"| SSE events per stream (upstream sends {m.stream_events}) | gateway "
        f"{gw['events']}, direct {direct['events']} (count: streams) |",
        f"| {shape.get('connections')} concurrent streams, {shape.get('chunks')} events "
        f"{shape.get('interval_ms')} ms apart | {paced.get('ok')} complete, events "
        f"{paced.get('events')}, longest silence {paced.get('max_gap_ms', 0):.0f} ms, "
        f"TTFT p99 {paced.get('ttft_p99_ms', 0):.0f} ms, affinity {paced.get('affinity')} |",
        f"| affinity statuses: pinning run / measured runs | {m.pin_statuses} / "
        f"{m.throughput[GATEWAY].get('affinity')} (best round) |",
        f"| Redis commands per pinned request | {m.commands_per_request():.3f} "
        f"({commands}; {m.redis_requests:,} requests) |",
        f"| gateway RSS idle / after the run | {m.rss_idle:.1f} MB / {m.rss_after:.1f} MB |",
        "", "| target (issue 4) | limit (goal) | measured | |", "|---|---|---|---|",
        f"| throughput vs empty Starlette, req/s | >= 0.25x (0.4x) | {m.ratio(GATEWAY):.2f}x | "
        f"{_mark(m.ratio(GATEWAY) >= 0.25, m.ratio(GATEWAY) >= 0.4)} |",
        f"| the same by CPU per request | >= 0.25x (0.4x) | {m.cpu_ratio(GATEWAY):.2f}x | "
        f"{_mark(m.cpu_ratio(GATEWAY) >= 0.25, m.cpu_ratio(GATEWAY) >= 0.4)} |",
        f"| added latency p50, 1 connection | <= 1.0 ms (0.5 ms) | {m.added(GATEWAY):.3f} ms | "
        f"{_mark(m.added(GATEWAY) <= 1.0, m.added(GATEWAY) <= 0.5)} |",
        f"| p99 at half-saturating load | <= 10 ms | {half['p99_ms']:.2f} ms | "
        f"{_mark(half['p99_ms'] <= 10)} |",
        f"| added TTFT p50 | <= 1.5 ms | {m.added_ttft():.3f} ms | "
        f"{_mark(m.added_ttft() <= 1.5)} |",
        f"| chunks out == chunks in | equal | {'equal' if m.events_match() else 'differ'} | "
        f"{_mark(m.events_match())} |",
        f"| {shape.get('connections')} concurrent streams, no stall | all complete, "
        f"no silence >= {STALL_MS:.0f} ms | {paced.get('ok')} complete, "
        f"{paced.get('max_gap_ms', 0):.0f} ms | {_mark(m.paced_ok())} |",
        f"| Redis commands per pinned request | 1 | {m.commands_per_request():.3f} | "
        f"{_mark(m.commands_per_request() <= 1.01)} |",
        f"| idle RSS per worker | <= 70 MB | {m.rss_idle:.1f} MB | {_mark(m.rss_idle <= 70)} |",
        "", "Not measured here: RSS growth over a 10-minute soak (run `make loadtest` with "
        "LOADTEST_DURATION=600 and watch the replicas' RSS).", "",
    ]
    return "\n".join(lines)
