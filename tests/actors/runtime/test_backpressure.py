"""Back-pressure with many senders, on a fake clock: what a receiver asks of them as its
backlog comes and goes (one sender, end to end: test_actor.py)."""

from __future__ import annotations

from typing import cast

from actors.runtime.backpressure import Backpressure
from actors.testing.clock import FakeClock
from broker_bridge import Endpoint, Envelope, Priority


class Link:
    """The endpoint's side: the Pause frames the receiver sends, by sender."""

    name = "site"

    def __init__(self) -> None:
        self.pauses: list[tuple[str, int]] = []  # (sender, credit bytes)

    def pause_sender(self, local: str, peer: str, hold_s: float, *,
                     credit_bytes: int = 0) -> None:
        self.pauses.append((peer, credit_bytes))


def update(sender: str) -> Envelope:
    return Envelope(id=b"\0" * 16, source=sender, destination="local-site1",
                    kind="PropertyValueUpdate", body=b"", priority=Priority.STATE)


def test_hundreds_of_senders_are_let_in_a_few_at_a_time_without_a_pause_storm() -> None:
    """Found at 500 OCPP chargers: when the backlog fell to ``resume_at`` (or the inbox ran
    empty), every sender held was sent a Pause with a credit, on every envelope taken at an
    empty inbox: tens of thousands of Pause frames a second went through the site's broker,
    and the CSMS's writes to the stations waited behind them for seconds."""
    clock = FakeClock()
    pressure = Backpressure("local-site1", clock)
    link = Link()
    endpoint = cast(Endpoint, link)
    settings = pressure.settings
    senders = [f"ocpp-site1-{i}" for i in range(500)]
    for sender in senders:  # a flood: every station's update at once
        pressure.arrived(update(sender), endpoint)
    held = {sender for sender, credit in link.pauses if credit == 0}
    assert len(held) == len(senders) - settings.pause_at + 1  # those beyond the threshold
    link.pauses.clear()
    credits: list[list[tuple[str, int]]] = []
    for _ in range(len(senders)):  # the receiver catches up, taking one envelope at a time
        pressure.taken(Priority.STATE)
        if link.pauses:
            credits.append(list(link.pauses))
            link.pauses.clear()
    # one pass while the clock stands still, for as many senders as the inbox has room for
    assert len(credits) == 1 and len(credits[0]) <= settings.pause_at - settings.resume_at
    assert all(credit == settings.credit_bytes for _, credit in credits[0])
    first = {sender for sender, _ in credits[0]}
    later: set[str] = set()
    for _ in range(3):  # each regrant period, the next in line; never all of them
        clock.advance(settings.regrant_s * 1.5)
        for sender in senders[:10]:  # a trickle at an empty inbox
            pressure.arrived(update(sender), endpoint)
            pressure.taken(Priority.STATE)
        assert 0 < len(link.pauses) <= settings.pause_at  # one pass a period, room-bound
        later |= {sender for sender, _ in link.pauses}
        link.pauses.clear()
    assert later and not later & first  # those waiting longest went first
