//! SVG charts per path: the latency each peer adds at p50, p90, p99 and p99.9
//! (`latency-SN.svg`), and its CPU per 1,000 requests beside its idle and peak memory
//! (`resources-SN.svg`).

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::peers::Peer;
use crate::results::{PathResult, PeerResult, PeerSummary, Stat};

/// Errors drawing a chart.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// plotters failed.
    #[error("cannot draw {file}: {message}")]
    Draw {
        /// The chart file.
        file: PathBuf,
        /// plotters' message.
        message: String,
    },
}

fn color(peer: Peer) -> RGBColor {
    match peer {
        Peer::Direct => RGBColor(120, 120, 120),
        Peer::MeshProxy => RGBColor(214, 39, 40),
        Peer::Envoy => RGBColor(31, 119, 180),
        Peer::Nginx => RGBColor(44, 160, 44),
        Peer::Haproxy => RGBColor(148, 103, 189),
        Peer::Pingora => RGBColor(255, 127, 14),
    }
}

fn med(s: &Option<PeerSummary>, f: fn(&PeerSummary) -> Option<Stat>) -> f64 {
    s.as_ref().and_then(f).map_or(0.0, |x| x.median.max(0.0))
}

fn proxies(path: &PathResult) -> Vec<&PeerResult> {
    path.peers
        .iter()
        .filter(|p| p.peer != Peer::Direct)
        .collect()
}

/// Writes both charts of `path` into `dir`; returns the files written.
pub fn draw(path: &PathResult, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let peers = proxies(path);
    if peers.is_empty() {
        return Ok(Vec::new());
    }
    let latency = dir.join(format!("latency-{}.svg", path.id));
    let resources = dir.join(format!("resources-{}.svg", path.id));
    let fail = |file: &Path| {
        let file = file.to_owned();
        move |e: Box<dyn std::error::Error>| Error::Draw {
            file: file.clone(),
            message: e.to_string(),
        }
    };
    draw_latency(path, &peers, &latency).map_err(fail(&latency))?;
    draw_resources(path, &peers, &resources).map_err(fail(&resources))?;
    Ok(vec![latency, resources])
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw_latency(path: &PathResult, peers: &[&PeerResult], file: &Path) -> DrawResult {
    let labels = ["p50", "p90", "p99", "p99.9"];
    let series: Vec<(Peer, [f64; 4])> = peers
        .iter()
        .map(|p| {
            let s = &p.summary;
            (
                p.peer,
                [
                    med(s, |x| x.p50),
                    med(s, |x| x.p90),
                    med(s, |x| x.p99),
                    med(s, |x| x.p999),
                ],
            )
        })
        .collect();
    // A log scale: the tail is often 10-100 times the median on a shared machine.
    let top = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(10.0f64, f64::max)
        * 1.5;
    let smallest = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| *v >= 1.0)
        .fold(f64::MAX, f64::min);
    let bottom = if smallest == f64::MAX {
        1.0
    } else {
        10f64.powf((smallest / 2.0).log10().floor()).max(1.0)
    };
    let root = SVGBackend::new(file, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: latency added over direct (µs, log scale, median of repetitions)",
                path.id
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..3usize).into_segmented(), (bottom..top).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).copied().unwrap_or("").to_owned(),
            _ => String::new(),
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("µs added")
        .draw()?;
    for (peer, values) in &series {
        let c = color(*peer);
        let points: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (SegmentValue::CenterOf(i), v.max(bottom)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(3)))?
            .label(peer.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()?;
    root.present()?;
    Ok(())
}

fn draw_resources(path: &PathResult, peers: &[&PeerResult], file: &Path) -> DrawResult {
    // Integer ranges are inclusive here: 0..last makes one segment per peer.
    let last = peers.len().saturating_sub(1).max(1);
    let root = SVGBackend::new(file, (1000, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let names: Vec<&str> = peers.iter().map(|p| p.peer.name()).collect();
    let formatter = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => names.get(*i).copied().unwrap_or("").to_owned(),
        _ => String::new(),
    };

    let cpu: Vec<f64> = peers
        .iter()
        .map(|p| med(&p.summary, |x| x.cpu_ms_per_1k))
        .collect();
    let top = cpu.iter().copied().fold(1.0f64, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&left)
        .caption(
            format!("{}: CPU ms per 1,000 requests", path.id),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0..last).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&formatter)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("CPU ms / 1k requests")
        .draw()?;
    chart.draw_series(cpu.iter().enumerate().map(|(i, v)| {
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), *v),
            ],
            color(peers[i].peer).filled(),
        );
        bar.set_margin(0, 0, 12, 12);
        bar
    }))?;

    let idle: Vec<f64> = peers.iter().map(|p| p.idle_rss_mb).collect();
    let peak: Vec<f64> = peers
        .iter()
        .map(|p| med(&p.summary, |x| x.peak_rss_mb))
        .collect();
    let top = idle.iter().chain(&peak).copied().fold(1.0f64, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&right)
        .caption(
            format!("{}: RSS of the path's proxies (MiB)", path.id),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0..last).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&formatter)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("MiB")
        .draw()?;
    let grey = RGBColor(170, 170, 170);
    let dark = RGBColor(60, 60, 60);
    chart
        .draw_series(idle.iter().enumerate().map(|(i, v)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::CenterOf(i), *v),
                ],
                grey.filled(),
            );
            bar.set_margin(0, 0, 10, 1);
            bar
        }))?
        .label("idle")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], grey.filled()));
    chart
        .draw_series(peak.iter().enumerate().map(|(i, v)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::CenterOf(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                dark.filled(),
            );
            bar.set_margin(0, 0, 1, 10);
            bar
        }))?
        .label("peak")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], dark.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()?;
    root.present()?;
    Ok(())
}
