//! Measurements and the printed table.

use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub count: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    /// CPU seconds the bridge (or the component under test) used during the run.
    pub cpu_seconds: Option<f64>,
    pub peak_rss_kib: Option<u64>,
}

impl Measured {
    /// Adds a run of the same load to this one, with the CPU seconds it took and the peak
    /// memory seen after it.
    pub fn add(&mut self, run: Measured, cpu_seconds: f64, peak_rss_kib: u64) {
        self.count += run.count;
        self.errors += run.errors;
        self.elapsed += run.elapsed;
        self.latencies.extend(run.latencies);
        self.cpu_seconds = Some(self.cpu_seconds.unwrap_or(0.0) + cpu_seconds);
        self.peak_rss_kib = self.peak_rss_kib.max(Some(peak_rss_kib));
    }

    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[index]
    }
}

pub struct Row {
    pub mode: &'static str,
    pub name: String,
    pub measured: Measured,
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

pub fn print_table(rows: &[Row]) {
    println!(
        "| mode | row | stanzas | errors | stanzas/s | p50 ms | p99 ms | max ms | CPU s / 10k | peak RSS MiB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let m = &row.measured;
        let cpu = m
            .cpu_seconds
            .map(|c| format!("{:.2}", c / m.count.max(1) as f64 * 10_000.0))
            .unwrap_or_else(|| "–".into());
        let rss = m
            .peak_rss_kib
            .map(|k| format!("{:.1}", k as f64 / 1024.0))
            .unwrap_or_else(|| "–".into());
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            row.mode,
            row.name,
            m.count,
            m.errors,
            m.per_second(),
            ms(m.percentile(0.5)),
            ms(m.percentile(0.99)),
            ms(m.percentile(1.0)),
            cpu,
            rss
        );
    }
}
