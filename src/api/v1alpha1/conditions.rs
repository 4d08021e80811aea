//! Condition types and reasons capssh sets: what people, alerts and MachineHealthChecks match
//! on, so they are part of the API. Every condition capssh writes uses these constants; the
//! controllers never decide anything by reading one back.

/// Condition types.
pub mod types {
    /// True when the object is ready for Cluster API: for an SSHMachine, the host is bootstrapped
    /// and answering (Cluster API mirrors it into the Machine's InfrastructureReady); for an
    /// SSHHost, the host is free to be claimed; for an SSHCluster, the endpoint is known.
    pub const READY: &str = "Ready";
    /// True while the Cluster or the object is paused: no host is touched.
    pub const PAUSED: &str = "Paused";
    /// SSHHost: the last probe reached the host.
    pub const REACHABLE: &str = "Reachable";
    /// SSHMachine: a host of the pool is claimed for this machine.
    pub const HOST_CLAIMED: &str = "HostClaimed";
    /// SSHMachine: the claimed host answers over SSH with a trusted key.
    pub const HOST_CONNECTED: &str = "HostConnected";
    /// SSHMachine (with spec.preparation): the container runtime and Kubernetes are installed or verified.
    pub const HOST_PREPARED: &str = "HostPrepared";
    /// SSHMachine: the bootstrap data ran on the host and left Cluster API's sentinel.
    pub const BOOTSTRAP_SUCCEEDED: &str = "BootstrapSucceeded";
    /// SSHMachine (while deleting): the host is reset, verified and returned to the pool.
    pub const HOST_RELEASED: &str = "HostReleased";
}

/// Condition (and event) reasons.
pub mod reasons {
    // Pause.
    /// The Cluster or the object carries the paused annotation or Cluster.spec.paused.
    pub const PAUSED: &str = "Paused";
    pub const NOT_PAUSED: &str = "NotPaused";

    // SSHMachine: waiting for Cluster API.
    pub const WAITING_FOR_MACHINE_OWNER: &str = "WaitingForMachineOwner";
    pub const WAITING_FOR_CLUSTER: &str = "WaitingForCluster";
    pub const WAITING_FOR_CLUSTER_INFRASTRUCTURE: &str = "WaitingForClusterInfrastructure";
    pub const WAITING_FOR_BOOTSTRAP_DATA: &str = "WaitingForBootstrapData";
    /// The bootstrap Secret is missing a key, malformed, or asks for something capssh refuses.
    pub const BOOTSTRAP_DATA_INVALID: &str = "BootstrapDataInvalid";

    // SSHMachine: claiming.
    /// No host matches the selector, failure domain and pin, or every match is taken.
    pub const NO_HOST_AVAILABLE: &str = "NoHostAvailable";
    /// Another machine claimed the chosen host first; capssh chooses again.
    pub const CLAIM_CONFLICT: &str = "ClaimConflict";
    /// The chosen host did not answer a connection, so it was not claimed; capssh chooses again
    /// (condition reason and event).
    pub const CHOSEN_HOST_DID_NOT_ANSWER: &str = "ChosenHostDidNotAnswer";
    pub const CLAIMED: &str = "Claimed";
    /// The event when a host is claimed.
    pub const CLAIMED_EVENT: &str = "HostClaimed";

    // SSHMachine: connecting (the SSH failure reasons are below).
    pub const CONNECTED: &str = "Connected";
    /// A credential Secret named by the SSHHost is missing, lacks its key, or is not labelled
    /// infrastructure.cluster.x-k8s.io/capssh-credentials: "true".
    pub const CREDENTIALS_UNAVAILABLE: &str = "CredentialsUnavailable";

    // SSHMachine: preparing (more reasons come from the host: see bootstrap::prepare).
    pub const PREPARING: &str = "Preparing";
    pub const PREPARED: &str = "Prepared";
    /// Mode None: the host's kubelet and kubeadm are at the Machine's version.
    pub const VERIFIED: &str = "Verified";
    pub const PREPARATION_FAILED: &str = "PreparationFailed";
    // Refused before anything runs (the host's own failures, e.g. ChecksumMismatch,
    // DownloadFailed or PackageManagerFailed, come from the preparation script's last line).
    pub const MISSING_VERSION: &str = "MissingVersion";
    pub const INVALID_VERSION: &str = "InvalidVersion";
    pub const UNSUPPORTED_OS: &str = "UnsupportedOS";
    pub const UNSUPPORTED_ARCH: &str = "UnsupportedArch";
    pub const INVALID_SOURCE: &str = "InvalidSource";
    /// spec.preparation.registry names a CA or a credentials Secret that is missing, lacks its
    /// key, or (a Secret) is not labelled infrastructure.cluster.x-k8s.io/capssh-credentials: "true".
    pub const REGISTRY_SETTINGS_UNAVAILABLE: &str = "RegistrySettingsUnavailable";
    /// Mode None: the host's kubelet or kubeadm is not at the Machine's version.
    pub const VERSION_MISMATCH: &str = "VersionMismatch";

    // SSHMachine: bootstrapping.
    pub const BOOTSTRAPPING: &str = "Bootstrapping";
    pub const BOOTSTRAP_FAILED: &str = "BootstrapFailed";
    pub const BOOTSTRAP_TIMED_OUT: &str = "BootstrapTimedOut";
    /// A deletion of this machine reset the host before `clusterctl move` made this copy.
    pub const HOST_ALREADY_RESET: &str = "HostAlreadyReset";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const PROVISIONED: &str = "Provisioned";

    // SSHMachine: deleting.
    pub const CLEANING: &str = "Cleaning";
    pub const CLEANUP_RETRYING: &str = "CleanupRetrying";
    pub const HOST_RELEASED: &str = "HostReleased";
    pub const HOST_QUARANTINED: &str = "HostQuarantined";

    // SSHHost.
    pub const PROBED: &str = "Probed";
    pub const AVAILABLE: &str = "Available";
    /// spec.maintenance keeps the host out of selection.
    pub const MAINTENANCE: &str = "Maintenance";
    pub const QUARANTINED: &str = "Quarantined";
    /// Claimed: the consuming SSHMachine reports the host's progress.
    pub const IN_USE: &str = "InUse";
    pub const PROBE_FAILED: &str = "ProbeFailed";
    pub const HOST_KEY_PINNED: &str = "HostKeyPinned";
    /// The box is recorded (in /var/lib/capssh/owner) as another SSHHost's: one machine, two
    /// SSHHosts. Refused until one of them goes.
    pub const DUPLICATE_HOST: &str = "DuplicateHost";
    /// Deleted while free, but its owner record could not be removed from the box (the event
    /// says why): the box must be cleared by hand before another SSHHost can stand for it.
    pub const OWNER_RECORD_LEFT: &str = "OwnerRecordLeft";
    /// Deleted while claimed: the deletion waits until the machine resets and releases the host.
    pub const WAITING_FOR_RELEASE: &str = "WaitingForRelease";
    /// The event on a machine whose preparation finished.
    pub const HOST_PREPARED_EVENT: &str = "HostPrepared";

    // SSHCluster.
    pub const WAITING_FOR_CLUSTER_OWNER: &str = "WaitingForClusterOwner";
    pub const WAITING_FOR_CONTROL_PLANE_ENDPOINT: &str = "WaitingForControlPlaneEndpoint";
    pub const DELETING: &str = "Deleting";

    // Talking to a host over SSH (SshError::reason): on HostConnected, Ready and Reachable.
    pub const HOST_UNREACHABLE: &str = "HostUnreachable";
    pub const HOST_KEY_MISMATCH: &str = "HostKeyMismatch";
    pub const HOST_KEY_NOT_PINNED: &str = "HostKeyNotPinned";
    pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
    pub const SUDO_NEEDS_PASSWORD: &str = "SudoNeedsPassword";
    pub const INVALID_HOST_KEY_PIN: &str = "InvalidHostKeyPin";
    pub const COMMAND_TIMED_OUT: &str = "CommandTimedOut";
    pub const SSH_PROTOCOL_ERROR: &str = "SSHProtocolError";
    pub const COMMAND_FAILED: &str = "CommandFailed";
}
