use super::*;

#[test]
fn parses_a_window_and_rejects_bad_ones() {
    let w: Window = "2026-01-01T00:00:00Z/2026-01-01T00:01:00Z"
        .parse()
        .expect("valid");
    assert_eq!(w.seconds(), 60);
    assert_eq!(w.to_string(), "2026-01-01T00:00:00Z/2026-01-01T00:01:00Z");
    assert!(matches!(
        "2026-01-01T00:00:00Z".parse::<Window>(),
        Err(WindowError::MissingSeparator { .. })
    ));
    assert!(matches!(
        "2026-01-01T00:01:00Z/2026-01-01T00:00:00Z".parse::<Window>(),
        Err(WindowError::Empty { .. })
    ));
    assert!(matches!(
        "yesterday/2026-01-01T00:00:00Z".parse::<Window>(),
        Err(WindowError::BadInstant { which: "start", .. })
    ));
    assert!(matches!(
        "2026-01-01T00:00:00.5Z/2026-01-01T00:00:02Z".parse::<Window>(),
        Err(WindowError::Fractional { .. })
    ));
    // Offsets are instants too.
    let w: Window = "2026-01-01T01:00:00+01:00/2026-01-01T00:00:10Z"
        .parse()
        .expect("valid");
    assert_eq!(w.seconds(), 10);
}

#[test]
fn overlap_is_the_intersection() {
    let w = Window::new(100, 200).expect("non-empty");
    assert_eq!(w.overlap(50, None), 100);
    assert_eq!(w.overlap(150, None), 50);
    assert_eq!(w.overlap(150, Some(160)), 10);
    assert_eq!(w.overlap(50, Some(100)), 0, "end is exclusive");
    assert_eq!(w.overlap(200, None), 0, "window end is exclusive");
    assert_eq!(w.overlap(10, Some(20)), 0);
    assert_eq!(w.overlap(160, Some(150)), 0, "inverted interval is empty");
}

#[test]
fn split_partitions_exactly() {
    let w = Window::new(0, 95).expect("non-empty");
    let parts = w.split(30);
    assert_eq!(parts.len(), 4);
    assert_eq!(parts.iter().map(Window::seconds).sum::<u64>(), 95);
    for pair in parts.windows(2) {
        assert_eq!(pair[0].end(), pair[1].start());
    }
    // Any interval's overlap summed over the parts equals its overlap with the whole.
    for (from, until) in [(3, Some(77)), (-5, None), (29, Some(31)), (94, Some(400))] {
        let sum: u64 = parts.iter().map(|p| p.overlap(from, until)).sum();
        assert_eq!(sum, w.overlap(from, until));
    }
}

#[test]
fn go_durations() {
    assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert!(parse_duration("fifteen").is_err());
    assert!(parse_duration("").is_err());
}
