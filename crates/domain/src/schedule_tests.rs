#![allow(clippy::unwrap_used)]

use super::*;

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
}

fn ats(times: &[&str]) -> Vec<DateTime<Utc>> {
    times.iter().map(|t| at(t)).collect()
}

fn cron(expression: &str, tz: Option<&str>) -> Schedule {
    Schedule::Cron(
        CronSchedule::parse(expression, tz).unwrap_or_else(|e| panic!("{expression:?} should parse: {e}")),
    )
}

fn upcoming(expression: &str, tz: &str, from: &str, count: usize) -> Vec<DateTime<Utc>> {
    cron(expression, Some(tz)).upcoming(at(from), count)
}

// ---- intervals ----

#[test]
fn every_secs_checks_bounds() {
    assert_eq!(
        Schedule::every_secs(1),
        Ok(Schedule::Every(Duration::from_secs(1)))
    );
    assert_eq!(
        Schedule::every_secs(MAX_INTERVAL_SECS),
        Ok(Schedule::Every(Duration::from_secs(3_153_600_000)))
    );
    for secs in [0, -1, i64::MIN, MAX_INTERVAL_SECS + 1, i64::MAX] {
        assert_eq!(
            Schedule::every_secs(secs),
            Err(ScheduleError::IntervalOutOfRange(secs))
        );
    }
    assert_eq!(
        Schedule::every_secs(0).unwrap_err().to_string(),
        "invalid interval of 0 seconds: expected 1 to 3153600000 seconds (100 years)"
    );
}

#[test]
fn an_interval_flow_is_due_when_created() {
    let now = at("2026-05-01T12:00:00.250Z");
    assert_eq!(Schedule::every_secs(60).unwrap().first_run_at(now), Some(now));
}

#[test]
fn next_interval_slot_is_the_first_slot_after_the_claim() {
    let every5 = Schedule::every_secs(5).unwrap();
    let slot = at("2026-05-01T12:00:00Z");
    for (now, next) in [
        ("2026-05-01T12:00:00Z", "2026-05-01T12:00:05Z"),
        ("2026-05-01T12:00:04.999Z", "2026-05-01T12:00:05Z"),
        ("2026-05-01T12:00:05Z", "2026-05-01T12:00:10Z"),
        ("2026-05-01T12:00:07Z", "2026-05-01T12:00:10Z"),
        // The claim came before the slot (clock skew): the next slot still follows the claimed one.
        ("2026-05-01T11:00:00Z", "2026-05-01T12:00:05Z"),
    ] {
        assert_eq!(
            every5.next_run_after(slot, at(now)),
            Some(at(next)),
            "claimed at {now}"
        );
    }
}

#[test]
fn a_one_second_tick_runs_a_five_second_interval_every_five_seconds_without_drift() {
    let every5 = Schedule::every_secs(5).unwrap();
    let start = at("2026-05-01T12:00:00.300Z");
    let mut due = every5.first_run_at(start).unwrap();
    let mut runs = Vec::new();
    for tick in 0..60 {
        // Each tick lands a little late, as a real timer does.
        let now = start + TimeDelta::seconds(tick) + TimeDelta::milliseconds(tick * 7 % 900);
        if now >= due {
            runs.push(due);
            due = every5.next_run_after(due, now).unwrap();
        }
    }
    let expected: Vec<_> = (0..12).map(|k| start + TimeDelta::seconds(5 * k)).collect();
    assert_eq!(runs, expected);
}

#[test]
fn after_downtime_an_interval_flow_runs_once_not_once_per_missed_slot() {
    let hourly = Schedule::every_secs(3_600).unwrap();
    let slot = at("2026-05-01T12:00:00Z");
    assert_eq!(
        hourly.next_run_after(slot, at("2026-05-03T15:03:07Z")),
        Some(at("2026-05-03T16:00:00Z"))
    );
}

#[test]
fn upcoming_intervals_count_from_the_start() {
    let every = Schedule::every_secs(5_400).unwrap();
    assert_eq!(
        every.upcoming(at("2026-05-01T00:00:00Z"), 3),
        ats(&[
            "2026-05-01T01:30:00Z",
            "2026-05-01T03:00:00Z",
            "2026-05-01T04:30:00Z"
        ])
    );
    assert_eq!(
        every.upcoming(at("2026-05-01T00:00:00Z"), 0),
        Vec::<DateTime<Utc>>::new()
    );
    assert_eq!(
        every.upcoming(at("2026-05-01T00:00:00Z"), usize::MAX).len(),
        MAX_UPCOMING
    );
}

#[test]
fn intervals_end_at_the_edge_of_time_instead_of_overflowing() {
    let max = DateTime::<Utc>::MAX_UTC;
    let min = DateTime::<Utc>::MIN_UTC;
    let every = Schedule::every_secs(MAX_INTERVAL_SECS).unwrap();
    assert_eq!(every.next_run_after(max, max), None);
    assert_eq!(every.next_run_after(min, max), None);
    assert_eq!(every.upcoming(max, 3), Vec::<DateTime<Utc>>::new());
    assert_eq!(every.first_run_at(max), Some(max));
    let every_second = Schedule::every_secs(1).unwrap();
    assert_eq!(every_second.next_run_after(min, max), None);
    assert_eq!(every_second.next_run_after(max, min), None);
    assert_eq!(
        every_second.next_run_after(min, min),
        Some(min + TimeDelta::seconds(1))
    );
    assert_eq!(every_second.upcoming(max - TimeDelta::seconds(2), 5).len(), 2);
}

#[test]
fn an_interval_built_by_hand_out_of_bounds_never_runs() {
    let now = at("2026-05-01T00:00:00Z");
    for interval in [
        Duration::ZERO,
        Duration::from_millis(999),
        Duration::from_secs(3_153_600_001),
        Duration::MAX,
    ] {
        let schedule = Schedule::Every(interval);
        assert_eq!(schedule.first_run_at(now), None, "{interval:?}");
        assert_eq!(schedule.next_run_after(now, now), None, "{interval:?}");
        assert_eq!(
            schedule.upcoming(now, 3),
            Vec::<DateTime<Utc>>::new(),
            "{interval:?}"
        );
    }
    // Sub-second parts of an otherwise valid interval are ignored.
    assert_eq!(
        Schedule::Every(Duration::from_millis(1_500)).next_run_after(now, now),
        Some(at("2026-05-01T00:00:01Z"))
    );
}

#[test]
fn displays_in_human_terms() {
    assert_eq!(Schedule::every_secs(5_400).unwrap().to_string(), "every 1h30m");
    assert_eq!(Schedule::every_secs(604_800).unwrap().to_string(), "every 7d");
    assert_eq!(
        cron(" 0 2 * * * ", Some("Europe/Berlin")).to_string(),
        "cron `0 2 * * *` (Europe/Berlin)"
    );
    assert_eq!(cron("@daily", None).to_string(), "cron `@daily` (UTC)");
}

// ---- cron: parsing ----

#[test]
fn keeps_the_expression_trimmed_and_the_zone_name() {
    let Schedule::Cron(c) = cron("  */5 * * * *\n", Some(" America/New_York ")) else {
        unreachable!()
    };
    assert_eq!(c.expression(), "*/5 * * * *");
    assert_eq!(c.time_zone(), "America/New_York");
    let Schedule::Cron(c) = cron("0 0 * * *", None) else {
        unreachable!()
    };
    assert_eq!(c.time_zone(), "UTC");
}

#[test]
fn refuses_a_wrong_field_count_in_one_line() {
    for (expression, found) in [
        ("", 0),
        ("   ", 0),
        ("* * * *", 4),
        ("0 0 1 1 * 2026", 6),
        ("1 2 3 4 5 6 7", 7),
    ] {
        match CronSchedule::parse(expression, None) {
            Err(ScheduleError::WrongFieldCount { found: f, .. }) => assert_eq!(f, found, "{expression:?}"),
            // 6 fields is a valid count; `2026` is then an out-of-range day of week.
            Err(ScheduleError::InvalidCron { .. }) if found == 6 => {}
            other => panic!("{expression:?}: {other:?}"),
        }
    }
    assert_eq!(
        CronSchedule::parse("* * * *", None).unwrap_err().to_string(),
        "invalid cron expression `* * * *`: found 4 fields; expected 5 fields (minute hour day-of-month month \
         day-of-week), 6 with a leading second, or a nickname such as @daily"
    );
}

#[test]
fn refuses_a_bad_expression_in_one_line_naming_it() {
    for expression in [
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * 32 * *",
        "* * * 13 *",
        "* * * * 8",
        "*/0 * * * *",
        "0/10 * * * *",
        "x * * * *",
        "* * * * FOO",
        "@reboot",
        "@every",
        "@daily extra stuff here now",
        ", * * * *",
        "0 0 , * 5",
        "0 0 * * +",
        "0 0 * MON *",
        "0 0 * * JAN",
        "0 0 SUN * *",
    ] {
        let err = CronSchedule::parse(expression, None).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("invalid cron expression `{expression}`: ")),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }
    assert_eq!(
        CronSchedule::parse("0 0 * MON *", None).unwrap_err().to_string(),
        "invalid cron expression `0 0 * MON *`: `MON` is not in its field: month names (JAN-DEC) go in the month \
         field, day names (SUN-SAT) in the day-of-week field"
    );
    assert_eq!(
        CronSchedule::parse("@reboot", None).unwrap_err().to_string(),
        "invalid cron expression `@reboot`: unknown nickname; use one of @yearly, @annually, @monthly, @weekly, \
         @daily, @hourly"
    );
}

#[test]
fn refuses_an_unknown_zone_in_one_line_naming_it() {
    for zone in [
        "",
        "Mars/Olympus",
        "utc",
        "Europe/Berlln",
        "../etc/passwd",
        "+02:00",
        "CEST",
    ] {
        assert_eq!(
            CronSchedule::parse("0 2 * * *", Some(zone)).unwrap_err(),
            ScheduleError::UnknownTimeZone(zone.into()),
            "{zone:?}"
        );
    }
    assert_eq!(
        CronSchedule::parse("0 2 * * *", Some("Mars/Olympus"))
            .unwrap_err()
            .to_string(),
        "unknown time zone `Mars/Olympus`: expected an IANA name such as UTC, Europe/Berlin or America/New_York"
    );
}

// ---- cron: fields and nicknames (all in UTC) ----

#[test]
fn standard_fields_names_ranges_steps_and_lists() {
    let from = "2026-04-01T10:07:00Z"; // a Wednesday
    assert_eq!(
        upcoming("*/15 * * * *", "UTC", from, 3),
        ats(&[
            "2026-04-01T10:15:00Z",
            "2026-04-01T10:30:00Z",
            "2026-04-01T10:45:00Z"
        ])
    );
    assert_eq!(
        upcoming("0 8,12,18 * * *", "UTC", from, 3),
        ats(&[
            "2026-04-01T12:00:00Z",
            "2026-04-01T18:00:00Z",
            "2026-04-02T08:00:00Z"
        ])
    );
    assert_eq!(
        upcoming("30 9 * * mon-fri", "UTC", from, 4),
        ats(&[
            "2026-04-02T09:30:00Z",
            "2026-04-03T09:30:00Z",
            "2026-04-06T09:30:00Z",
            "2026-04-07T09:30:00Z"
        ])
    );
    assert_eq!(
        upcoming("0 0 1 JAN,Jul *", "UTC", from, 2),
        ats(&["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"])
    );
    assert_eq!(
        upcoming("10-50/20 10 * * *", "UTC", from, 3),
        ats(&[
            "2026-04-01T10:10:00Z",
            "2026-04-01T10:30:00Z",
            "2026-04-01T10:50:00Z"
        ])
    );
    // 0 and 7 are both Sunday; `?` means `*` in the day fields.
    assert_eq!(
        upcoming("0 0 * * 7", "UTC", from, 1),
        ats(&["2026-04-05T00:00:00Z"])
    );
    assert_eq!(
        upcoming("0 0 * * 0", "UTC", from, 1),
        ats(&["2026-04-05T00:00:00Z"])
    );
    assert_eq!(
        upcoming("0 0 ? * 0", "UTC", from, 1),
        ats(&["2026-04-05T00:00:00Z"])
    );
}

#[test]
fn six_fields_start_with_seconds() {
    assert_eq!(
        upcoming("*/10 * * * * *", "UTC", "2026-04-01T10:00:00Z", 3),
        ats(&[
            "2026-04-01T10:00:10Z",
            "2026-04-01T10:00:20Z",
            "2026-04-01T10:00:30Z"
        ])
    );
    assert_eq!(
        upcoming("30 0 12 * * *", "UTC", "2026-04-01T10:00:00Z", 1),
        ats(&["2026-04-01T12:00:30Z"])
    );
}

#[test]
fn nicknames() {
    let from = "2026-04-01T10:07:00Z";
    for (nickname, next) in [
        ("@yearly", "2027-01-01T00:00:00Z"),
        ("@annually", "2027-01-01T00:00:00Z"),
        ("@monthly", "2026-05-01T00:00:00Z"),
        ("@weekly", "2026-04-05T00:00:00Z"),
        ("@daily", "2026-04-02T00:00:00Z"),
        ("@DAILY", "2026-04-02T00:00:00Z"),
        ("@hourly", "2026-04-01T11:00:00Z"),
    ] {
        assert_eq!(upcoming(nickname, "UTC", from, 1), ats(&[next]), "{nickname}");
    }
    assert_eq!(
        upcoming("@daily", "Europe/Berlin", from, 1),
        ats(&["2026-04-01T22:00:00Z"])
    );
}

#[test]
fn day_of_month_and_day_of_week_both_restricted_fire_on_either() {
    // April 2026: Fridays are the 3rd, 10th, 17th and 24th; the 13th is a Monday.
    assert_eq!(
        upcoming("0 0 13 * 5", "UTC", "2026-04-01T00:00:00Z", 6),
        ats(&[
            "2026-04-03T00:00:00Z",
            "2026-04-10T00:00:00Z",
            "2026-04-13T00:00:00Z",
            "2026-04-17T00:00:00Z",
            "2026-04-24T00:00:00Z",
            "2026-05-01T00:00:00Z",
        ])
    );
    // With one of them `*`, only the other restricts.
    assert_eq!(
        upcoming("0 0 13 * *", "UTC", "2026-04-01T00:00:00Z", 2),
        ats(&["2026-04-13T00:00:00Z", "2026-05-13T00:00:00Z"])
    );
    assert_eq!(
        upcoming("0 0 * * 5", "UTC", "2026-04-01T00:00:00Z", 2),
        ats(&["2026-04-03T00:00:00Z", "2026-04-10T00:00:00Z"])
    );
    // Only a field that is exactly `*` is unrestricted: a stepped `*/10` still fires on either.
    assert_eq!(
        upcoming("0 0 */10 * 1", "UTC", "2026-04-01T00:00:00Z", 5),
        ats(&[
            "2026-04-06T00:00:00Z",
            "2026-04-11T00:00:00Z",
            "2026-04-13T00:00:00Z",
            "2026-04-20T00:00:00Z",
            "2026-04-21T00:00:00Z",
        ])
    );
    // croner's `+` asks for both: only Friday the 13th (2026: February, March and November).
    assert_eq!(
        upcoming("0 0 13 * +5", "UTC", "2026-04-01T00:00:00Z", 2),
        ats(&["2026-11-13T00:00:00Z", "2027-08-13T00:00:00Z"])
    );
}

#[test]
fn croner_extensions_last_nearest_weekday_and_nth() {
    let from = "2026-04-01T00:00:00Z";
    assert_eq!(
        upcoming("0 0 L * *", "UTC", from, 2),
        ats(&["2026-04-30T00:00:00Z", "2026-05-31T00:00:00Z"])
    );
    assert_eq!(
        upcoming("0 0 * * 5L", "UTC", from, 1),
        ats(&["2026-04-24T00:00:00Z"])
    );
    assert_eq!(
        upcoming("0 0 * * 5#2", "UTC", from, 1),
        ats(&["2026-04-10T00:00:00Z"])
    );
    // 2026-11-15 is a Sunday: the nearest weekday is Monday the 16th.
    assert_eq!(
        upcoming("0 0 15W 11 *", "UTC", from, 1),
        ats(&["2026-11-16T00:00:00Z"])
    );
}

#[test]
fn next_after_is_strictly_after_even_within_a_second() {
    let c = cron("0 12 * * *", None);
    let Schedule::Cron(c) = c else { unreachable!() };
    assert_eq!(
        c.next_after(at("2026-04-01T12:00:00Z")),
        Some(at("2026-04-02T12:00:00Z"))
    );
    assert_eq!(
        c.next_after(at("2026-04-01T11:59:59.999Z")),
        Some(at("2026-04-01T12:00:00Z"))
    );
    assert_eq!(
        c.next_after(at("2026-04-01T12:00:00.001Z")),
        Some(at("2026-04-02T12:00:00Z"))
    );
}

#[test]
fn cron_first_and_next_runs() {
    let s = cron("0 */6 * * *", None);
    assert_eq!(
        s.first_run_at(at("2026-04-01T01:00:00Z")),
        Some(at("2026-04-01T06:00:00Z"))
    );
    // Claimed late: the next slot follows the claim, skipping missed ones.
    assert_eq!(
        s.next_run_after(at("2026-04-01T06:00:00Z"), at("2026-04-01T19:30:00Z")),
        Some(at("2026-04-02T00:00:00Z"))
    );
    // Claimed early (clock skew): the next slot still follows the claimed slot.
    assert_eq!(
        s.next_run_after(at("2026-04-01T06:00:00Z"), at("2026-04-01T05:59:58Z")),
        Some(at("2026-04-01T12:00:00Z"))
    );
}

#[test]
fn an_expression_that_never_fires_is_refused() {
    for expression in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 * * L", "0 0 30 2 +1"] {
        assert_eq!(
            CronSchedule::parse(expression, Some("Europe/Berlin")),
            Err(ScheduleError::InvalidCron {
                expression: expression.into(),
                reason: "it never fires (such as `0 0 30 2 *`, February 30th)".into()
            }),
        );
    }
    // Rare is not never: February 29th, and a Friday the 13th in February only.
    assert_eq!(
        upcoming("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", 1),
        ats(&["2028-02-29T00:00:00Z"])
    );
    assert_eq!(
        upcoming("0 0 13 2 +5", "UTC", "2026-03-01T00:00:00Z", 1),
        ats(&["2032-02-13T00:00:00Z"])
    );
}

// ---- cron: daylight saving time ----
// Europe/Berlin 2026: CET (UTC+1) → CEST (UTC+2) at 2026-03-29T01:00Z; back at 2026-10-25T01:00Z.
// America/New_York 2026: EST (UTC−5) → EDT (UTC−4) at 2026-03-08T07:00Z; back at 2026-11-01T06:00Z.

#[test]
fn berlin_spring_forward_runs_a_job_in_the_gap_once_right_after_it() {
    // 02:30 does not exist on 03-29; the job runs at 03:00 CEST.
    assert_eq!(
        upcoming("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 4),
        ats(&[
            "2026-03-28T01:30:00Z", // 02:30 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST, the first instant after the gap
            "2026-03-30T00:30:00Z", // 02:30 CEST
            "2026-03-31T00:30:00Z",
        ])
    );
    // Claiming that run late does not run it again.
    assert_eq!(
        cron("30 2 * * *", Some("Europe/Berlin"))
            .next_run_after(at("2026-03-29T01:00:00Z"), at("2026-03-29T01:20:00Z")),
        Some(at("2026-03-30T00:30:00Z"))
    );
}

#[test]
fn berlin_daily_at_two_across_spring_forward() {
    assert_eq!(
        upcoming("0 2 * * *", "Europe/Berlin", "2026-03-27T00:00:00Z", 4),
        ats(&[
            "2026-03-27T01:00:00Z", // 02:00 CET
            "2026-03-28T01:00:00Z", // 02:00 CET
            "2026-03-29T01:00:00Z", // 02:00 does not exist: 03:00 CEST
            "2026-03-30T00:00:00Z", // 02:00 CEST
        ])
    );
}

#[test]
fn new_york_spring_forward_runs_a_job_in_the_gap_once_right_after_it() {
    assert_eq!(
        upcoming("30 2 * * *", "America/New_York", "2026-03-06T12:00:00Z", 3),
        ats(&[
            "2026-03-07T07:30:00Z", // 02:30 EST
            "2026-03-08T07:00:00Z", // 03:00 EDT, the first instant after the gap
            "2026-03-09T06:30:00Z", // 02:30 EDT
        ])
    );
}

#[test]
fn hourly_jobs_run_once_per_real_hour_across_spring_forward() {
    assert_eq!(
        upcoming("0 * * * *", "Europe/Berlin", "2026-03-28T22:30:00Z", 4),
        ats(&[
            "2026-03-28T23:00:00Z", // 00:00 CET
            "2026-03-29T00:00:00Z", // 01:00 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST (02:00 does not exist)
            "2026-03-29T02:00:00Z", // 04:00 CEST
        ])
    );
    assert_eq!(
        upcoming("0 * * * *", "America/New_York", "2026-03-08T04:30:00Z", 4),
        ats(&[
            "2026-03-08T05:00:00Z", // 00:00 EST
            "2026-03-08T06:00:00Z", // 01:00 EST
            "2026-03-08T07:00:00Z", // 03:00 EDT
            "2026-03-08T08:00:00Z", // 04:00 EDT
        ])
    );
}

#[test]
fn spring_forward_runs_lists_and_ranges_without_a_wildcard_once_right_after_the_gap() {
    assert_eq!(
        upcoming("30 2,14 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 4),
        ats(&[
            "2026-03-28T13:30:00Z", // 14:30 CET
            "2026-03-29T01:00:00Z", // 02:30 does not exist: 03:00 CEST
            "2026-03-29T12:30:00Z", // 14:30 CEST
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ])
    );
    // Two scheduled times in the gap still make one run.
    assert_eq!(
        upcoming("0,30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 4),
        ats(&[
            "2026-03-29T01:00:00Z", // 02:00 and 02:30 do not exist: once, at 03:00 CEST
            "2026-03-30T00:00:00Z", // 02:00 CEST
            "2026-03-30T00:30:00Z", // 02:30 CEST
            "2026-03-31T00:00:00Z",
        ])
    );
    assert_eq!(
        upcoming("0 30 1-2 * * *", "America/New_York", "2026-03-08T05:00:00Z", 3),
        ats(&[
            "2026-03-08T06:30:00Z", // 01:30 EST
            "2026-03-08T07:00:00Z", // 02:30 does not exist: 03:00 EDT
            "2026-03-09T05:30:00Z", // 01:30 EDT
        ])
    );
    // The same holds when the search starts between a run and the gap.
    assert_eq!(
        upcoming("30 1,2 * * *", "Europe/Berlin", "2026-03-29T00:40:00Z", 2),
        ats(&["2026-03-29T01:00:00Z", "2026-03-29T23:30:00Z"])
    );
}

#[test]
fn spring_forward_skips_wildcard_times_in_the_gap() {
    // `*` in the minute field: the job has no run while the clock skips 02:00-02:59.
    assert_eq!(
        upcoming("*/30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 4),
        ats(&[
            "2026-03-30T00:00:00Z", // 02:00 CEST
            "2026-03-30T00:30:00Z", // 02:30 CEST
            "2026-03-31T00:00:00Z",
            "2026-03-31T00:30:00Z",
        ])
    );
}

#[test]
fn fall_back_runs_a_fixed_time_job_in_the_repeated_hour_once() {
    assert_eq!(
        upcoming("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
        ats(&[
            "2026-10-25T00:30:00Z", // the first 02:30, CEST; not again at 01:30Z (02:30 CET)
            "2026-10-26T01:30:00Z", // 02:30 CET
        ])
    );
    assert_eq!(
        upcoming("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
        ats(&[
            "2026-11-01T05:30:00Z", // the first 01:30, EDT; not again at 06:30Z (01:30 EST)
            "2026-11-02T06:30:00Z", // 01:30 EST
        ])
    );
    // Claiming the first run during the repeated hour does not run it again.
    assert_eq!(
        cron("30 2 * * *", Some("Europe/Berlin"))
            .next_run_after(at("2026-10-25T00:30:00Z"), at("2026-10-25T01:10:00Z")),
        Some(at("2026-10-26T01:30:00Z"))
    );
}

#[test]
fn fall_back_runs_lists_and_ranges_without_a_wildcard_once() {
    assert_eq!(
        upcoming("30 2,14 * * *", "Europe/Berlin", "2026-10-24T20:00:00Z", 3),
        ats(&[
            "2026-10-25T00:30:00Z", // the first 02:30, CEST; not again at 01:30Z (02:30 CET)
            "2026-10-25T13:30:00Z", // 14:30 CET
            "2026-10-26T01:30:00Z", // 02:30 CET
        ])
    );
    assert_eq!(
        upcoming("0,30 1 * * *", "America/New_York", "2026-11-01T04:00:00Z", 3),
        ats(&[
            "2026-11-01T05:00:00Z", // 01:00 EDT
            "2026-11-01T05:30:00Z", // 01:30 EDT; the EST pass (06:00Z, 06:30Z) does not run
            "2026-11-02T06:00:00Z", // 01:00 EST
        ])
    );
    // Starting on the second pass finds nothing more that night.
    assert_eq!(
        upcoming("0,30 1 * * *", "America/New_York", "2026-11-01T05:45:00Z", 1),
        ats(&["2026-11-02T06:00:00Z"])
    );
}

#[test]
fn fall_back_runs_wildcard_jobs_at_both_occurrences() {
    assert_eq!(
        upcoming("0 * * * *", "Europe/Berlin", "2026-10-24T22:30:00Z", 4),
        ats(&[
            "2026-10-24T23:00:00Z", // 01:00 CEST
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T01:00:00Z", // 02:00 CET
            "2026-10-25T02:00:00Z", // 03:00 CET
        ])
    );
    assert_eq!(
        upcoming("0 * * * *", "America/New_York", "2026-11-01T03:30:00Z", 4),
        ats(&[
            "2026-11-01T04:00:00Z", // 00:00 EDT
            "2026-11-01T05:00:00Z", // 01:00 EDT
            "2026-11-01T06:00:00Z", // 01:00 EST
            "2026-11-01T07:00:00Z", // 02:00 EST
        ])
    );
    assert_eq!(
        upcoming("*/30 2 * * *", "Europe/Berlin", "2026-10-24T20:00:00Z", 5),
        ats(&[
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T00:30:00Z", // 02:30 CEST
            "2026-10-25T01:00:00Z", // 02:00 CET
            "2026-10-25T01:30:00Z", // 02:30 CET
            "2026-10-26T01:00:00Z", // 02:00 CET
        ])
    );
    // Starting inside the repeated hour, on its second pass, finds no earlier run.
    assert_eq!(
        upcoming("0 * * * *", "Europe/Berlin", "2026-10-25T01:10:00Z", 1),
        ats(&["2026-10-25T02:00:00Z"])
    );
}

// ---- no panics ----

#[test]
fn no_input_panics() {
    let long_list = format!("{} * * * *", vec!["1"; 5_000].join(","));
    let long_garbage = "*".repeat(100_000);
    let expressions = [
        "",
        " ",
        "*",
        "* * * * *",
        "* * * * * *",
        "* * * * * * *",
        "*/0 * * * *",
        "5-1 * * * *",
        "1-2-3 * * * *",
        "- * * * *",
        ", * * * *",
        "/ * * * *",
        "*/ * * * *",
        "/10 * * * *",
        "1/ * * * *",
        "L * * * *",
        "* * L * *",
        "* * LW * *",
        "* * 15W * *",
        "* * 31W * *",
        "* * 0W * *",
        "* * L-3 * *",
        "* * * * L",
        "* * * * 5L",
        "* * * * 5#3",
        "* * * * 5#6",
        "* * * * 5#0",
        "* * * * #",
        "* * * * 7#5",
        "* * * * +",
        "* * * * ++5",
        "* * * * +*",
        "* * ? * ?",
        "0 0 29 2 *",
        "0 0 30 2 *",
        "0 0 L 2 *",
        "@",
        "@@daily",
        "@ daily",
        "99999999999999999999 * * * *",
        "-1 * * * *",
        "0-99999 * * * *",
        "\0 * * * *",
        "★ * * * *",
        "ı * * * *",
        "ß * * * *",
        "ﬀ * * * *",
        "* * * * MONDAY",
        "* * * * SUN-SAT",
        "* * * * 7-0",
        "* * * * 0-7",
        "* * * SEP-MAR *",
        "* * * * FRI-MON",
        "0 0 * * * SUN",
        "\u{200b}* * * * *",
        "*\t*\n*\r*\u{3000}*",
        &long_list,
        &long_garbage,
    ];
    let zones = [
        None,
        Some("UTC"),
        Some("Europe/Berlin"),
        Some("America/New_York"),
        Some("Pacific/Kiritimati"),
        Some("Pacific/Pago_Pago"),
        Some("Australia/Lord_Howe"),
        Some("Antarctica/Troll"),
    ];
    let instants = [
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC,
        at("0001-01-01T00:00:00Z"),
        at("0001-01-01T23:59:59Z"),
        at("1969-12-31T23:59:59.999999999Z"),
        at("2026-03-29T01:00:00Z"),
        at("4999-12-31T23:59:59Z"),
        at("5000-01-01T00:00:00Z"),
        at("9999-12-31T23:59:59Z"),
    ];
    for expression in expressions {
        for zone in zones {
            let parsed = match CronSchedule::parse(expression, zone) {
                Ok(parsed) => parsed,
                Err(e) => {
                    assert!(!e.to_string().contains(['\n', '\r']), "{expression:?}: {e}");
                    continue;
                }
            };
            let schedule = Schedule::Cron(parsed);
            let _ = schedule.to_string();
            for &from in &instants {
                for t in schedule.upcoming(from, 3) {
                    assert!(t > from, "{expression:?} {zone:?} {from}: {t}");
                }
                for now in [instants[0], instants[1], instants[5]] {
                    if let Some(t) = schedule.next_run_after(from, now) {
                        assert!(t > from.max(now), "{expression:?} {zone:?} {from} {now}: {t}");
                    }
                }
                let _ = schedule.first_run_at(from);
            }
        }
    }
    for secs in [1, 59, 86_400, MAX_INTERVAL_SECS] {
        let schedule = Schedule::every_secs(secs).unwrap();
        for &from in &instants {
            let _ = schedule.upcoming(from, 3);
            let _ = schedule.first_run_at(from);
            for &now in &instants {
                if let Some(t) = schedule.next_run_after(from, now) {
                    assert!(t > now, "every {secs} s {from} {now}: {t}");
                }
            }
        }
    }
}
