//! The `capssh` binary: a thin CLI that wires the library together.

use capssh::{api, cli, manager};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "capssh", version, about = "Cluster API infrastructure provider for hosts reachable over SSH")]
struct Cli {
    /// Log format: json (for clusters) or text (for people).
    #[arg(long, global = true, default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers, the webhook, health probes and metrics.
    Manager(manager::ManagerArgs),
    /// Print the CRD manifests generated from the API types.
    Crds {
        /// Write one file per CRD into this folder (config/crd/bases) instead of printing.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Look at hosts before Cluster API uses them.
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Run bootstrap data on hosts by hand.
    #[command(subcommand)]
    Bootstrap(BootstrapCommand),
    /// Prepare hosts by hand (container runtime and Kubernetes), as spec.preparation does.
    #[command(subcommand)]
    Prepare(PrepareCommand),
    /// Reset hosts by hand, as deleting a Machine does.
    #[command(subcommand)]
    Reset(ResetCommand),
    /// Artifact mirrors for preparation mode Artifacts (air-gapped sites).
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum HostsCommand {
    /// Connect exactly as the controller would and print the host's facts as JSON.
    Check(cli::ConnectionArgs),
}

#[derive(Subcommand)]
enum BootstrapCommand {
    /// Run bootstrap data on a host as a job; print the redacted log and the result.
    Run(cli::bootstrap::BootstrapArgs),
}

#[derive(Subcommand)]
enum PrepareCommand {
    /// Prepare (or, mode None, verify) a host as a job; print the redacted log and the result.
    Run(cli::prepare::PrepareArgs),
}

#[derive(Subcommand)]
enum ResetCommand {
    /// Reset a host (kubeadm reset and the rest) as a job, then verify it is clean.
    Run(cli::reset::ResetArgs),
}

#[derive(Subcommand)]
enum ArtifactsCommand {
    /// Build <output>/<version>/<arch>/ (bin/, cni/, images/, SHA256SUMS) from binaries you have.
    Build(cli::artifacts::BuildArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match cli.command {
        Command::Manager(args) => manager::run(args).await,
        Command::Crds { output_dir } => print_crds(output_dir),
        Command::Hosts(HostsCommand::Check(args)) => exit_on_error(cli::hosts::check(&args).await),
        Command::Bootstrap(BootstrapCommand::Run(args)) => exit_on_error(cli::bootstrap::run(&args).await),
        Command::Prepare(PrepareCommand::Run(args)) => exit_on_error(cli::prepare::run(&args).await),
        Command::Reset(ResetCommand::Run(args)) => exit_on_error(cli::reset::run(&args).await),
        Command::Artifacts(ArtifactsCommand::Build(args)) => exit_on_error(cli::artifacts::run(&args).map_err(cli::CliError::from)),
        Command::Version => {
            println!("capssh {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

/// Prints a CLI error and exits with its code (so scripts can tell failures apart).
fn exit_on_error(result: Result<(), cli::CliError>) -> anyhow::Result<()> {
    if let Err(err) = result {
        eprintln!("error: {err}");
        std::process::exit(err.exit_code());
    }
    Ok(())
}

fn print_crds(output_dir: Option<PathBuf>) -> anyhow::Result<()> {
    for crd in api::crds::all() {
        let yaml = api::crds::to_yaml(&crd)?;
        match &output_dir {
            Some(dir) => std::fs::write(dir.join(api::crds::file_name(&crd)), yaml)?,
            None => print!("{yaml}"),
        }
    }
    Ok(())
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
