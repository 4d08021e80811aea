//! `make bench`: capssh against the SSH floor and the peer BYOH (when its binaries are built) on
//! N local sshd hosts; prints a table and writes JSON under the artifacts folder.
//!
//!   bench [--sizes 50,100,200] [--concurrency 64] [--floor-runs 3] [--build-peer] [--no-byoh]
//!         [--byoh-max-size 200] [--blackhole-percent 20]
//!
//! `--build-peer` builds BYOH's binaries first (hack/tools/build.sh byoh-manager byoh-agent, cached;
//! `make bench` passes it); a failed build is reported as BYOH's reason, the rest still runs.
//! `--no-byoh` leaves BYOH out; `--byoh-max-size M` leaves it out at sizes above M (its agents stay
//! on every host). `--blackhole-percent P` adds a capssh run per size with the last P% of the hosts
//! unplugged once Available (0: no such run). `BENCH_SIZES`, `BENCH_CONCURRENCY`,
//! `BENCH_FLOOR_RUNS`, `BENCH_BYOH_MAX_SIZE` and `BENCH_BLACKHOLE_PERCENT` set the same as their
//! flags. Needs root (network namespaces), the tools of hack/tools and a release
//! build of capssh (`make bench` does both).

use capssh_e2e::bench::{self, Config, peer, report};

fn parse_sizes(text: &str) -> anyhow::Result<Vec<usize>> {
    text.split(',').filter(|s| !s.trim().is_empty()).map(|s| Ok(s.trim().parse()?)).collect()
}

/// The configuration, and whether to build the peer first.
fn config() -> anyhow::Result<(Config, bool)> {
    let mut config = Config::default();
    let mut build_peer = false;
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
    if let Some(v) = env("BENCH_SIZES") {
        config.sizes = parse_sizes(&v)?;
    }
    if let Some(v) = env("BENCH_CONCURRENCY") {
        config.concurrency = v.trim().parse()?;
    }
    if let Some(v) = env("BENCH_FLOOR_RUNS") {
        config.floor_runs = v.trim().parse()?;
    }
    if let Some(v) = env("BENCH_BYOH_MAX_SIZE") {
        config.byoh_max_size = v.trim().parse()?;
    }
    if let Some(v) = env("BENCH_BLACKHOLE_PERCENT") {
        config.blackhole_percent = v.trim().parse()?;
    }
    if let Some(v) = env("BENCH_STEADY_SECONDS") {
        config.steady_seconds = v.trim().parse()?;
    }
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--sizes" => config.sizes = parse_sizes(&value()?)?,
            "--concurrency" => config.concurrency = value()?.parse()?,
            "--floor-runs" => config.floor_runs = value()?.parse()?,
            "--build-peer" => build_peer = true,
            "--no-byoh" => config.byoh = false,
            "--byoh-max-size" => config.byoh_max_size = value()?.parse()?,
            "--blackhole-percent" => config.blackhole_percent = value()?.parse()?,
            "--steady-seconds" => config.steady_seconds = value()?.parse()?,
            other => anyhow::bail!("unknown argument {other} (see the doc comment of e2e/src/bin/bench.rs)"),
        }
    }
    anyhow::ensure!(!config.sizes.is_empty() && config.concurrency > 0, "no sizes, or concurrency 0");
    anyhow::ensure!(config.blackhole_percent < 100, "--blackhole-percent must leave some hosts plugged in (0 to 99)");
    Ok((config, build_peer))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, build_peer) = config()?;
    let machine = report::Machine::now();
    eprintln!("bench: sizes {:?}, concurrency {}, load average {}", config.sizes, config.concurrency, machine.load_average_at_start);
    if build_peer && config.byoh {
        eprintln!("bench: building BYOH's binaries (hack/tools/build.sh {}; cached by version)", peer::BYOH_TOOLS.join(" "));
    }
    let build_log = capssh_e2e::tools::artifacts_dir("bench").join("byoh-build.log");
    let peers = peer::Peers::find(build_peer && config.byoh, &build_log);
    eprintln!("bench: k0smotron: {}", peers.k0smotron.reason);
    match &peers.byoh {
        Ok((manager, agent)) => eprintln!("bench: BYOH {}: {} and {}", bench::byoh::VERSION, manager.display(), agent.display()),
        Err(why) => eprintln!("bench: BYOH: {why}"),
    }
    let mut results = Vec::new();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let path = capssh_e2e::tools::artifacts_dir("bench").join("results.json");
    for &n in &config.sizes {
        results.push(bench::run_size(&config, n, &peers).await?);
        // After each size: a long run stopped later keeps what it measured.
        let json = serde_json::to_string_pretty(&report::Report {
            command: command.clone(),
            config: &config,
            machine: machine.clone(),
            requests_source: report::REQUESTS_SOURCE,
            results: &results,
        })?;
        std::fs::write(&path, json)?;
    }
    println!("{}", report::render(&config, &results));
    println!("JSON: {}", path.display());
    Ok(())
}
