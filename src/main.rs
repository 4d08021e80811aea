//! The `capssh` binary: a thin CLI that wires the library together.

use capssh::{api, manager};
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
    /// Print the version.
    Version,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match cli.command {
        Command::Manager(args) => manager::run(args).await,
        Command::Crds { output_dir } => print_crds(output_dir),
        Command::Version => {
            println!("capssh {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
