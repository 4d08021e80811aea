//! `make chaos`: faults against the SSHMachine and SSHHost controllers, round after round, with
//! the invariants checked after each; prints a table and exits 1 on any violation.
//!
//!   chaos [--seed N] [--rounds N] [--max-rounds N] [--hosts N] [--machines N] [--storm N]
//!         [--replicas N] [--min-kills N] [--min-deletes N] [--rss-bound-mib N] [--sample]
//!
//! Each flag also reads from the environment: CHAOS_SEED, CHAOS_ROUNDS, CHAOS_MAX_ROUNDS,
//! CHAOS_HOSTS, CHAOS_MACHINES, CHAOS_STORM, CHAOS_REPLICAS, CHAOS_MIN_KILLS, CHAOS_MIN_DELETES,
//! CHAOS_RSS_BOUND_MIB, CHAOS_SAMPLE=1 (flags win). Without them it is the full run
//! (`Config::full`). Needs root, the tools of hack/tools and capssh built in the same profile.
//!
//!   chaos --reboots [--seed N] [--nodes N] [--min-per-phase N] [--sample]
//!
//! is `make chaos-reboots` (`chaos::reboots`): real node reboots during preparation, bootstrap
//! and reset; also CHAOS_SEED, REBOOT_NODES, REBOOT_MIN_PER_PHASE.

use capssh_e2e::chaos::{self, Config, reboots, report, rng};

fn config() -> anyhow::Result<Config> {
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
    let mut values: Vec<(String, String)> = Vec::new();
    let keys = ["seed", "rounds", "max-rounds", "hosts", "machines", "storm", "replicas", "min-kills", "min-deletes", "rss-bound-mib"];
    for key in keys {
        if let Some(v) = env(&format!("CHAOS_{}", key.to_uppercase().replace('-', "_"))) {
            values.push((key.to_string(), v));
        }
    }
    let mut sample = env("CHAOS_SAMPLE").is_some_and(|v| v != "0");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--sample" {
            sample = true;
            continue;
        }
        let key = arg
            .strip_prefix("--")
            .filter(|k| keys.contains(k))
            .ok_or_else(|| anyhow::anyhow!("unknown argument {arg} (see e2e/src/bin/chaos.rs)"))?;
        let value = args.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))?;
        values.push((key.to_string(), value));
    }
    let seed = values.iter().rev().find(|(k, _)| k == "seed").map(|(_, v)| v.trim().parse()).transpose()?.unwrap_or_else(rng::fresh_seed);
    let mut config = if sample { Config::sample(seed) } else { Config::full(seed) };
    let rounds_given = values.iter().any(|(k, _)| k == "rounds");
    let max_given = values.iter().any(|(k, _)| k == "max-rounds");
    for (key, value) in values {
        let value = value.trim();
        match key.as_str() {
            "seed" => {}
            "rounds" => config.rounds = value.parse()?,
            "max-rounds" => config.max_rounds = value.parse()?,
            "hosts" => config.hosts = value.parse()?,
            "machines" => config.machines_per_round = value.parse()?,
            "storm" => config.storm_machines = value.parse()?,
            "replicas" => config.replicas = value.parse()?,
            "min-kills" => config.min_kills = value.parse()?,
            "min-deletes" => config.min_mid_bootstrap_deletes = value.parse()?,
            "rss-bound-mib" => config.rss_bound_mib = value.parse()?,
            _ => unreachable!("keys are checked above"),
        }
    }
    // Fewer rounds asked for: the minimum counts are not to stretch the run past them, unless
    // a cap is given too.
    if rounds_given && !max_given {
        config.max_rounds = config.max_rounds.max(config.rounds);
    }
    anyhow::ensure!(config.hosts > 0 && config.rounds > 0 && config.replicas > 0, "hosts, rounds and replicas must be above 0");
    Ok(config)
}

fn reboots_config() -> anyhow::Result<reboots::Config> {
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
    let (mut seed, mut nodes, mut min) = (env("CHAOS_SEED"), env("REBOOT_NODES"), env("REBOOT_MIN_PER_PHASE"));
    let mut sample = false;
    let mut args = std::env::args().skip(1).filter(|a| a != "--reboots");
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--sample" => {
                sample = true;
                continue;
            }
            "--seed" => &mut seed,
            "--nodes" => &mut nodes,
            "--min-per-phase" => &mut min,
            _ => anyhow::bail!("unknown argument {arg} (see e2e/src/bin/chaos.rs)"),
        };
        *slot = Some(args.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))?);
    }
    let seed = seed.map(|s| s.trim().parse()).transpose()?.unwrap_or_else(rng::fresh_seed);
    let mut config = if sample { reboots::Config::sample(seed) } else { reboots::Config::full(seed) };
    if let Some(nodes) = nodes {
        config.nodes = nodes.trim().parse()?;
    }
    if let Some(min) = min {
        config.min_per_phase = min.trim().parse()?;
    }
    anyhow::ensure!(config.nodes > 0, "nodes must be above 0");
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--reboots") || std::env::var("CHAOS_REBOOTS").is_ok_and(|v| v == "1") {
        let config = reboots_config()?;
        eprintln!("chaos-reboots: {config:?}");
        let summary = reboots::run(config).await?;
        println!("{}", reboots::report::render(&summary));
        if !summary.ok() || !summary.enough() {
            std::process::exit(1);
        }
        return Ok(());
    }
    let config = config()?;
    eprintln!("chaos: {config:?}");
    let summary = chaos::run(config).await?;
    println!("{}", report::render(&summary));
    if !summary.ok() {
        std::process::exit(1);
    }
    Ok(())
}
