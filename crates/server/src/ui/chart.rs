//! The duration chart of a flow's page: an SVG drawn on the server, styled by classes (the CSP allows no
//! inline styles), each point a link to its run.

use flowrun_domain::{RunRecord, RunStatus};
use maud::{Markup, html};

use super::views::duration_text;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 28.0;

/// A point of the chart: a finished run.
struct Point {
    id: i64,
    x: f64,
    y: f64,
    ms: i64,
    failed: bool,
    label: String,
}

/// Durations of the finished runs among `runs` (newest first) over their start times; failures marked.
pub(super) fn durations(runs: &[&RunRecord]) -> Markup {
    let mut finished: Vec<(&RunRecord, i64)> = runs
        .iter()
        .filter_map(|record| Some((*record, record.run.duration()?.num_milliseconds().max(0))))
        .collect();
    if finished.len() < 2 {
        return html! { p.muted { "The chart appears once the flow has two finished runs." } };
    }
    finished.sort_by_key(|(record, _)| (record.run.started_at, record.run.id.0));
    let first = finished[0].0.run.started_at;
    let last = finished[finished.len() - 1].0.run.started_at;
    let span_ms = (last - first).num_milliseconds().max(1) as f64;
    let max_ms = finished.iter().map(|(_, ms)| *ms).max().unwrap_or(0);
    let top_ms = nice_ceiling(max_ms.max(1));
    // Short spans read in seconds, long ones by date.
    let axis_format = if last - first < chrono::TimeDelta::days(1) {
        "%H:%M:%S UTC"
    } else {
        "%m-%d %H:%M UTC"
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let points: Vec<Point> = finished
        .iter()
        .map(|(record, ms)| {
            let run = &record.run;
            let offset = (run.started_at - first).num_milliseconds() as f64;
            Point {
                id: run.id.0,
                x: LEFT + plot_w * offset / span_ms,
                y: TOP + plot_h * (1.0 - *ms as f64 / top_ms as f64),
                ms: *ms,
                failed: run.status == RunStatus::Failed,
                label: format!(
                    "Run #{} · {} · {} · {}",
                    run.id.0,
                    run.status.as_str(),
                    duration_text(*ms),
                    run.started_at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            }
        })
        .collect();
    let line = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", p.x, p.y))
        .collect::<Vec<_>>()
        .join(" ");
    let failures = points.iter().filter(|p| p.failed).count();
    let slowest = points.iter().map(|p| p.ms).max().unwrap_or(0);
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
                aria-label=(format!("Durations of the last {} finished runs; {failures} failed; slowest {}", points.len(), duration_text(slowest))) {
                @for step in 0..=4 {
                    @let ms = top_ms * step / 4;
                    @let y = TOP + plot_h * (1.0 - step as f64 / 4.0);
                    line.gridline x1=(LEFT) x2=(WIDTH - RIGHT) y1=(format!("{y:.1}")) y2=(format!("{y:.1}")) {}
                    text.axis x=(LEFT - 8.0) y=(format!("{:.1}", y + 4.0)) text-anchor="end" { (duration_text(ms)) }
                }
                text.axis x=(LEFT) y=(HEIGHT - 8.0) text-anchor="start" { (first.format(axis_format)) }
                text.axis x=(WIDTH - RIGHT) y=(HEIGHT - 8.0) text-anchor="end" { (last.format(axis_format)) }
                polyline.trend points=(line) {}
                @for p in &points {
                    a href=(format!("/ui/runs/{}", p.id)) {
                        title { (p.label) }
                        @if p.failed {
                            path.fail d=(format!("M{:.1} {:.1}l8 8m0 -8l-8 8", p.x - 4.0, p.y - 4.0)) {}
                            circle.hit cx=(format!("{:.1}", p.x)) cy=(format!("{:.1}", p.y)) r="8" {}
                        } @else {
                            circle.ok cx=(format!("{:.1}", p.x)) cy=(format!("{:.1}", p.y)) r="3.5" {}
                            circle.hit cx=(format!("{:.1}", p.x)) cy=(format!("{:.1}", p.y)) r="8" {}
                        }
                    }
                }
            }
            figcaption.small.muted {
                span.legend-ok { "●" } " success  " span.legend-fail { "✕" } " failed · "
                (points.len()) " finished runs, " (failures) " failed"
            }
        }
    }
}

/// The smallest of 1, 2, 2.5 or 5 × 10ⁿ that is at least `ms`, so the axis reads in round numbers.
fn nice_ceiling(ms: i64) -> i64 {
    let mut scale: i64 = 1;
    loop {
        for step in [10, 20, 25, 50] {
            let candidate = scale.saturating_mul(step) / 10;
            if candidate >= ms {
                return candidate.max(1);
            }
        }
        if scale > i64::MAX / 100 {
            return ms;
        }
        scale *= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_top_is_a_round_number_above_the_slowest_run() {
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(1_400), 2_000);
        assert_eq!(nice_ceiling(2_100), 2_500);
        assert_eq!(nice_ceiling(2_600), 5_000);
        assert_eq!(nice_ceiling(i64::MAX), i64::MAX);
    }
}
