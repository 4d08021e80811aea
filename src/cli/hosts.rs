//! `capssh hosts check`: connect as the controller would and print the host's facts.

use super::{CliError, ConnectionArgs};
use crate::ssh::{Session, Timeouts};
use serde_json::json;

pub async fn check(args: &ConnectionArgs) -> Result<(), CliError> {
    let session = Session::connect(&args.target()?, &Timeouts::default()).await?;
    let facts = session.probe().await?;
    let report = json!({
        "address": args.address,
        "port": args.port,
        "user": args.user,
        "hostKey": session.host_key_openssh(),
        "hostKeyFingerprint": session.host_key_fingerprint(),
        "trustedOnFirstUse": session.trusted_on_first_use(),
        "facts": facts,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    session.close().await;
    Ok(())
}
