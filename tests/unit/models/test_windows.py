from __future__ import annotations

import numpy as np
import pytest

from models.sensors.windows import AssetWindow, WindowSpec

SPEC = WindowSpec(channels=("t",), window=4, stride=2, period_s=1.0)


def feed(window: AssetWindow, times: list[float]) -> list:
    ready = []
    for t in times:
        ready += window.add(t, np.array([t])).ready
    return ready


def test_a_window_is_ready_every_stride_once_full() -> None:
    ready = feed(AssetWindow(SPEC), [float(t) for t in range(8)])
    assert [r.values[:, 0].tolist() for r in ready] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    assert (ready[0].start_s, ready[0].end_s) == (0.0, 3.0)


def test_out_of_order_events_within_lateness_are_reordered() -> None:
    window = AssetWindow(WindowSpec(("t",), 4, 4, 1.0, lateness_s=2.0))
    ready = feed(window, [0, 2, 1, 3, 5, 4, 6, 7, 8, 9])
    assert ready[0].values[:, 0].tolist() == [0, 1, 2, 3]
    assert ready[0].filled == 0


def test_late_and_duplicate_events_are_reported_not_dropped_silently() -> None:
    window = AssetWindow(WindowSpec(("t",), 4, 2, 1.0, lateness_s=1.0))
    feed(window, [0, 1, 2, 3, 4, 5])
    assert window.add(1.0, np.array([1.0])).outcome == "late"
    assert window.add(5.0, np.array([5.0])).outcome == "duplicate"
    assert window.add(6.0, np.array([6.0])).outcome == "accepted"


def test_gaps_are_resampled_or_masked() -> None:
    resampled = feed(AssetWindow(SPEC), [0, 1, 4, 5])
    assert [r.values[:, 0].tolist() for r in resampled] == [[0, 1, 2, 3], [2, 3, 4, 5]]
    assert [r.filled for r in resampled] == [2, 2]
    masked = feed(AssetWindow(WindowSpec(("t",), 4, 2, 1.0, gap_policy="mask")), [0, 1, 4, 5])
    assert [r.values[:, 0].tolist() for r in masked] == [[0, 1, 0, 0], [0, 0, 4, 5]]


def test_memory_per_asset_is_bounded() -> None:
    window = AssetWindow(WindowSpec(("a", "b"), 64, 16, 1.0))
    feed_many = [window.add(float(t), np.array([t, t])) for t in range(10_000)]
    assert feed_many[-1].outcome == "accepted"
    assert window.memory_bytes() < 1024


def test_windows_align_to_event_time_so_a_partial_history_scores_the_same_windows() -> None:
    full = feed(AssetWindow(SPEC), [float(t) for t in range(3, 20)])
    later = feed(AssetWindow(SPEC), [float(t) for t in range(8, 20)])
    assert [r.end_s for r in later] == [r.end_s for r in full if r.end_s >= 11]
    assert [r.values.tolist() for r in later] == [r.values.tolist() for r in full if r.end_s >= 11]


def test_a_phase_moves_the_windows_due_steps_and_keeps_them_stride_apart() -> None:
    spec = WindowSpec(channels=("t",), window=4, stride=4, period_s=1.0)
    aligned = feed(AssetWindow(spec), [float(t) for t in range(16)])
    shifted = feed(AssetWindow(WindowSpec(("t",), 4, 4, 1.0, phase=1)), [float(t) for t in range(16)])
    assert [r.end_s for r in aligned] == [3.0, 7.0, 11.0, 15.0]
    assert [r.end_s for r in shifted] == [6.0, 10.0, 14.0]
    assert shifted[0].values[:, 0].tolist() == [3, 4, 5, 6]


def _run_of(rng: np.random.Generator, start: float, length: int) -> list[float]:
    """Times mostly on the grid, with gaps, repeats and steps back now and then."""
    times, t = [], start
    for _ in range(length):
        t += float(rng.choice([1.0, 1.0, 1.0, 1.0, 3.0, 0.0, -2.0, 0.5]))
        times.append(t)
    return times


def test_a_run_of_events_gives_what_offering_each_in_turn_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    in_one_step = []
    one_step = AssetWindow._extend_on_grid
    monkeypatch.setattr(
        AssetWindow, "_extend_on_grid", lambda self, *a: in_one_step.append(len(a[0])) or one_step(self, *a)
    )
    rng = np.random.default_rng(7)
    specs = [
        WindowSpec(("a", "b"), 8, 3, 1.0, phase=2),
        WindowSpec(("a", "b"), 8, 3, 1.0, pad="edge"),
        WindowSpec(("a", "b"), 8, 4, 1.0, gap_policy="mask"),
        WindowSpec(("a", "b"), 8, 4, 1.0, lateness_s=2.0),
    ]
    for spec in specs:
        one_by_one, in_runs = AssetWindow(spec), AssetWindow(spec)
        start = 0.0
        for length in [3, 40, 1, 17, 64, 5, 30]:
            on_grid = length % 2 == 0  # even runs stay on the grid: the one-step path
            times = [start + k + 1 for k in range(length)] if on_grid else _run_of(rng, start, length)
            rows = rng.normal(size=(length, 2)).astype(np.float32)
            expected_ready, expected_refused = [], []
            for index, (t, row) in enumerate(zip(times, rows, strict=True)):
                added = one_by_one.add(t, row)
                expected_ready += [(index, w) for w in added.ready]
                if added.outcome != "accepted":
                    expected_refused.append((index, added.outcome))
            extended = in_runs.extend(times, rows)
            assert extended.refused == expected_refused
            assert [(i, w.start_s, w.end_s, w.filled) for i, w in extended.ready] == [
                (i, w.start_s, w.end_s, w.filled) for i, w in expected_ready
            ]
            for (_, got), (_, want) in zip(extended.ready, expected_ready, strict=True):
                np.testing.assert_array_equal(got.values, want.values)
            start = max(*times, start)
        probe = start + 1.0
        assert len(in_runs.add(probe, [0.0, 0.0]).ready) == len(one_by_one.add(probe, [0.0, 0.0]).ready)
    assert in_one_step == [40, 64, 30] * 3  # every spec but the one that allows lateness


def test_a_long_run_on_the_grid_keeps_only_the_newest_window_in_the_ring() -> None:
    window = AssetWindow(WindowSpec(("t",), 4, 4, 1.0))
    extended = window.extend([float(t) for t in range(40)], np.arange(40, dtype=np.float32)[:, None])
    assert [w.values[:, 0].tolist() for _, w in extended.ready][-1] == [36, 37, 38, 39]
    assert [i for i, _ in extended.ready] == list(range(3, 40, 4))
    after = window.add(43.0, [43.0]).ready
    assert after[0].values[:, 0].tolist() == [40, 41, 42, 43] and after[0].filled == 3
