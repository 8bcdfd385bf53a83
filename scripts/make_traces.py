#!/usr/bin/env python3
"""Writes the load traces in traces/ (deterministic: fixed seeds). Shapes follow the field notes
(../shared/seed-notes.md); load is in host-equivalents (1.0 = one web host at full capacity).

    python3 scripts/make_traces.py
"""
import math
import random
from datetime import datetime, timedelta, timezone

JST = timezone(timedelta(hours=9))


def noise(rng, state, sigma=0.06, keep=0.9):
    """AR(1) multiplicative noise around 1.0: real traffic wobbles, it does not jump."""
    state = keep * state + math.sqrt(1 - keep * keep) * rng.gauss(0, sigma)
    return state


def diurnal(hour, night, day):
    """Low around 04:00, high through the afternoon and evening."""
    x = (1 - math.cos(2 * math.pi * ((hour - 4) % 24) / 24)) / 2
    return night + (day - night) * x ** 1.5


def write(path, start, step, values, comment):
    with open(path, "w") as f:
        f.write(comment)
        f.write("time,offered_load\n")
        for i, v in enumerate(values):
            t = start + timedelta(seconds=i * step)
            f.write(f"{t.isoformat()},{max(v, 0.0):.4f}\n")


def tournament_week():
    """Golf association site (case 1): 7 days at 1-minute resolution; four tournament days
    (Thursday to Sunday) whose daytime traffic reaches 5x the normal day's, with a surge around
    the final holes and a spike when the final round ends on Sunday."""
    rng = random.Random(1)
    start = datetime(2026, 5, 18, 0, 0, tzinfo=JST)  # a Monday
    step = 60
    n = 7 * 24 * 60
    out, st = [], 0.0
    for i in range(n):
        t = start + timedelta(seconds=i * step)
        h = t.hour + t.minute / 60
        base = diurnal(h, 0.10, 0.55)
        mult = 1.0
        if t.weekday() >= 3:  # Thu..Sun
            # play runs 07:00-17:30; interest builds through the day, peaks at the final holes
            if 6.5 <= h <= 19:
                rise = min(1.0, (h - 6.5) / 2.5)
                fall = min(1.0, max(0.0, (19 - h) / 2.0))
                mult += 4.0 * rise * fall
                mult += 1.2 * math.exp(-((h - 15.5) / 0.6) ** 2)  # leaderboard surge
            if t.weekday() == 6:
                mult += 2.5 * math.exp(-((h - 17.2) / 0.25) ** 2)  # the winner's putt
        st = noise(rng, st, 0.07, 0.92)
        out.append(base * mult * (1 + st))
    write("traces/tournament-week.csv", start, step, out,
          "# Golf tournament week (field notes, case 1): Mon-Sun, tournament Thu-Sun at up to 5x the\n"
          "# normal daytime load, leaderboard surges, the Sunday finish. Host-equivalents, 1-minute steps.\n")


def tv_feature():
    """Ramen shop storefront (case 2): a quiet evening, then a TV feature sends 30x the base in
    two minutes, decaying over an hour; a smaller wave when the programme repeats the shop's
    address at its close."""
    rng = random.Random(2)
    start = datetime(2026, 6, 10, 12, 0, tzinfo=JST)
    step = 10
    n = 12 * 360
    air = 19 * 3600 + 12 * 60 - 12 * 3600  # 19:12 in seconds from noon
    out, st = [], 0.0
    for i in range(n):
        s = i * step
        t = start + timedelta(seconds=s)
        h = t.hour + t.minute / 60
        base = diurnal(h, 0.08, 0.20)
        mult = 1.0
        if s >= air:
            dt = s - air
            ramp = min(1.0, dt / 120.0)
            mult += 29.0 * ramp * math.exp(-max(0, dt - 120) / 1300.0)
        wave = air + 38 * 60
        if s >= wave:
            dt = s - wave
            mult += 8.0 * min(1.0, dt / 90.0) * math.exp(-max(0, dt - 90) / 600.0)
        st = noise(rng, st, 0.05, 0.9)
        out.append(base * mult * (1 + st))
    write("traces/tv-feature.csv", start, step, out,
          "# TV feature on a ramen shop's web store (field notes, case 2): 30x the base load within\n"
          "# two minutes of airing at 19:12, decaying over an hour. Host-equivalents, 10-second steps.\n")


def celebrity_tweet():
    """Donation site after the earthquake (case 3): emergency traffic all day, then a celebrity's
    tweet brings 100x the base in under five minutes. Base 0.34 host-equivalents, so the peak of
    34 on a single 8-CPU host is a load average of about 273, as seen that morning; a second
    wave follows when the news picks the tweet up."""
    rng = random.Random(3)
    start = datetime(2026, 3, 12, 6, 0, tzinfo=JST)
    step = 10
    n = 10 * 360
    tweet = 4 * 3600 + 5 * 60  # 10:05
    out, st = [], 0.0
    for i in range(n):
        s = i * step
        t = start + timedelta(seconds=s)
        h = t.hour + t.minute / 60
        base = 0.34 * diurnal(h, 0.7, 1.0) / diurnal(10 + 5 / 60, 0.7, 1.0)
        mult = 1.0
        if s >= tweet:
            dt = s - tweet
            mult += 99.0 * min(1.0, dt / 240.0) * math.exp(-max(0, dt - 300) / 2400.0)
        news = tweet + 150 * 60
        if s >= news:
            dt = s - news
            mult += 35.0 * min(1.0, dt / 600.0) * math.exp(-max(0, dt - 600) / 3000.0)
        st = noise(rng, st, 0.05, 0.9)
        out.append(base * mult * (1 + st))
    write("traces/celebrity-tweet.csv", start, step, out,
          "# Donation site during the earthquake emergency (field notes, case 3): a celebrity's tweet\n"
          "# at 10:05 brings 100x the base in under 5 minutes (load average ~273 on one 8-CPU host),\n"
          "# then a second wave from the news. Host-equivalents, 10-second steps.\n")


def double_spike():
    """Two TV features four hours apart on one evening (a programme and its late repeat): each
    needs 5 slaves at its peak, so with a cap of 7 the second finds 2 launches left unless the
    first wave's slaves were kept through the lull."""
    rng = random.Random(4)
    start = datetime(2026, 6, 12, 16, 0, tzinfo=JST)
    step = 10
    n = 9 * 360
    out, st = [], 0.0
    for i in range(n):
        s = i * step
        t = start + timedelta(seconds=s)
        h = t.hour + t.minute / 60
        base = diurnal(h, 0.10, 0.25)
        extra = 0.0
        for air in (2 * 3600, 6 * 3600):  # 18:00 and 22:00
            if s >= air:
                dt = s - air
                # 4.2 host-equivalents at the peak: about 5 slaves at 80 % each wave.
                extra += 4.2 * min(1.0, dt / 120.0) * math.exp(-max(0, dt - 120) / 900.0)
        st = noise(rng, st, 0.05, 0.9)
        out.append((base + extra) * (1 + st))
    write("traces/double-spike.csv", start, step, out,
          "# Two TV features four hours apart (18:00 and 22:00): each needs about 5 slaves; with a cap\n"
          "# of 7 the second wave is short unless the first wave's slaves were kept. 10-second steps.\n")


def midnight_spike():
    """A spike that starts at 23:40 local time and lasts past 00:30: slaves launched before
    midnight count on both days, and the day's cap resets in the middle of the burst."""
    rng = random.Random(5)
    start = datetime(2026, 6, 13, 21, 0, tzinfo=JST)
    step = 10
    n = 6 * 360
    spike = 2 * 3600 + 40 * 60  # 23:40
    out, st = [], 0.0
    for i in range(n):
        s = i * step
        t = start + timedelta(seconds=s)
        h = t.hour + t.minute / 60
        base = diurnal(h, 0.10, 0.25)
        extra = 0.0
        if s >= spike:
            dt = s - spike
            # 5 host-equivalents: about 6 slaves, launched before midnight and needed after.
            extra = 5.0 * min(1.0, dt / 180.0) * math.exp(-max(0, dt - 1800) / 1200.0)
        st = noise(rng, st, 0.05, 0.9)
        out.append((base + extra) * (1 + st))
    write("traces/midnight-spike.csv", start, step, out,
          "# A burst from 23:40 past 00:30 local time: the day's cap resets mid-burst, and slaves alive\n"
          "# at midnight count toward the new day. 10-second steps.\n")


def slow_ramp():
    """A campaign launch: load climbs steadily from 0.4 to 4 host-equivalents over three hours,
    holds for an hour, and falls back over two. Reactive scaling lags a ramp by the lead time
    the whole way up."""
    rng = random.Random(6)
    start = datetime(2026, 6, 15, 9, 0, tzinfo=JST)
    step = 30
    n = 7 * 120
    out, st = [], 0.0
    for i in range(n):
        s = i * step
        if s < 3 * 3600:
            v = 0.4 + 3.6 * s / (3 * 3600)
        elif s < 4 * 3600:
            v = 4.0
        elif s < 6 * 3600:
            v = 4.0 - 3.6 * (s - 4 * 3600) / (2 * 3600)
        else:
            v = 0.4
        st = noise(rng, st, 0.04, 0.9)
        out.append(v * (1 + st))
    write("traces/slow-ramp.csv", start, step, out,
          "# A campaign launch: 0.4 to 4 host-equivalents over three hours, an hour's hold, two hours\n"
          "# back down. 30-second steps.\n")


def noisy_plateau():
    """A busy afternoon hovering around the scale-out point: 1.6 host-equivalents with heavy,
    fast noise (±25 %). It baits an autoscaler into flapping."""
    rng = random.Random(7)
    start = datetime(2026, 6, 16, 13, 0, tzinfo=JST)
    step = 10
    n = 4 * 360
    out, st = [], 0.0
    for i in range(n):
        st = noise(rng, st, 0.25, 0.5)
        out.append(1.6 * (1 + st))
    write("traces/noisy-plateau.csv", start, step, out,
          "# A plateau at 1.6 host-equivalents with heavy, fast noise (about 25 %): bait for flapping.\n"
          "# 10-second steps.\n")


if __name__ == "__main__":
    tournament_week()
    tv_feature()
    celebrity_tweet()
    double_spike()
    midnight_spike()
    slow_ramp()
    noisy_plateau()
