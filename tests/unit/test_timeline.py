from harness.timeline import Sample, Timeline, first_event, time_to_detect, time_to_recover


def test_time_to_detect_is_the_gap_to_the_first_matching_event_after_injection() -> None:
    tl = Timeline()
    tl.event("alert.firing", "EtcdNoLeader", at=3.0)  # before the fault: not a detection
    tl.event("fault.injected", "kill-leader", at=10.0)
    tl.event("alert.firing", "Other", at=11.0)
    tl.event("alert.firing", "EtcdNoLeader", at=13.5)
    assert time_to_detect(tl, after=10.0, kind="alert.firing", name="EtcdNoLeader") == 3.5
    assert time_to_detect(tl, after=14.0, kind="alert.firing", name="EtcdNoLeader") is None


def test_events_are_returned_in_time_order_whatever_the_order_of_writing() -> None:
    tl = Timeline()
    tl.event("b", "x", at=2.0)
    tl.event("a", "x", at=1.0)
    assert [e.t for e in tl.events()] == [1.0, 2.0]
    ev = first_event(tl, after=0.0, kind="b")
    assert ev is not None and ev.t == 2.0


def test_time_to_recover_needs_the_series_to_stay_healthy_for_the_hold() -> None:
    values = [0.2, 0.5, 0.99, 0.4, 0.999, 0.999, 0.999, 0.999]
    samples = [Sample(float(t), v) for t, v in enumerate(values)]
    ok = lambda v: v >= 0.99  # noqa: E731
    # 0.99 at t=2 does not hold; from t=4 it holds for 3 s.
    assert time_to_recover(samples, after=1.0, ok=ok, hold=3.0) == 3.0
    assert time_to_recover(samples, after=1.0, ok=ok, hold=10.0) is None
    assert time_to_recover(samples, after=1.0, ok=ok) == 1.0


def test_to_dict_is_json_ready() -> None:
    tl = Timeline()
    tl.event("fault.injected", "storm", at=1.23456, rate=100)
    tl.sample("load.rps", 99.5, at=1.0)
    d = tl.to_dict()
    assert d["events"][0] == {
        "t": 1.235,
        "kind": "fault.injected",
        "name": "storm",
        "detail": {"rate": 100},
    }
    assert d["series"]["load.rps"] == [[1.0, 99.5]]
