//! What one reconcile of an SSHMachine reports, and the one place it is written: the status
//! (conditions, phase, fields), the events, and the requeue. Steps only say what they saw.

use crate::api::v1alpha1::conditions::types::READY;
use crate::api::v1alpha1::{ConditionStatus, MachinePhase, SSHMachine, SSHMachineStatus};
use crate::controllers::{Context, ReconcileError, conditions};
use kube::runtime::controller::Action;
use std::time::Duration;

/// How a reconcile ends.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Nothing to do until something changes (a watch brings the machine back).
    AwaitChange,
    /// Look again after this long.
    After(Duration),
    /// Work on the host is under way during deletion: the finalizer stays.
    StillWorking { what: String, after: Duration },
    /// A failure for the error policy (which logs it and requeues); the status is still saved.
    Error(ReconcileError),
    /// The host could not be reached or used; the condition says why. Transient failures are
    /// retried with a per-machine exponential backoff.
    HostFailed(ReconcileError),
    /// The object is about to go (its finalizer is removed): nothing is written.
    Gone,
}

/// A step either lets the reconcile go on with a value, or ends it with an [`Outcome`].
pub(super) type Step<T> = Result<T, Outcome>;

impl From<ReconcileError> for Outcome {
    fn from(err: ReconcileError) -> Self {
        Outcome::Error(err)
    }
}

impl From<kube::Error> for Outcome {
    fn from(err: kube::Error) -> Self {
        Outcome::Error(err.into())
    }
}

struct PendingEvent {
    warning: bool,
    reason: String,
    message: String,
    /// Published only when this condition's reason changed in this reconcile (one
    /// event per change, not one per retry).
    on_change_of: Option<&'static str>,
}

/// The status being built by one reconcile, and its events.
pub(super) struct Report<'a> {
    machine: &'a SSHMachine,
    pub status: SSHMachineStatus,
    events: Vec<PendingEvent>,
    /// The host answered in this reconcile (its backoff starts over).
    pub host_answered: bool,
}

impl<'a> Report<'a> {
    pub fn new(machine: &'a SSHMachine) -> Self {
        Self { machine, status: machine.status.clone().unwrap_or_default(), events: Vec::new(), host_answered: false }
    }

    pub fn set(&mut self, kind: &str, status: ConditionStatus, reason: &str, message: &str) {
        conditions::set(&mut self.status.conditions, kind, status, reason, message, self.machine.metadata.generation);
    }

    /// Ready True, with no message (see [`conditions::set_ready`]).
    pub fn ready(&mut self, reason: &str) {
        conditions::set_ready(&mut self.status.conditions, reason, self.machine.metadata.generation);
    }

    /// Sets a step's condition False and mirrors it into Ready (which Cluster API copies into
    /// the Machine's InfrastructureReady), with the phase people see.
    pub fn wait(&mut self, kind: &str, reason: &str, message: &str, phase: MachinePhase) {
        self.set(kind, ConditionStatus::False, reason, message);
        self.set(READY, ConditionStatus::False, reason, message);
        self.status.phase = Some(phase);
    }

    /// Like [`Report::wait`] for something a person must fix: also a Warning event, once per change.
    pub fn fail(&mut self, kind: &'static str, reason: &str, message: &str, phase: MachinePhase) {
        self.wait(kind, reason, message, phase);
        self.events.push(PendingEvent { warning: true, reason: reason.to_string(), message: message.to_string(), on_change_of: Some(kind) });
    }

    /// A provisioned machine's host stopped answering: the condition and Ready go False with the
    /// reason, the phase stays (nothing was undone), and a Warning event marks the change.
    pub fn degrade(&mut self, kind: &'static str, reason: &str, message: &str) {
        self.set(kind, ConditionStatus::False, reason, message);
        self.set(READY, ConditionStatus::False, reason, message);
        self.events.push(PendingEvent { warning: true, reason: reason.to_string(), message: message.to_string(), on_change_of: Some(kind) });
    }

    /// A Normal event.
    pub fn note(&mut self, reason: &'static str, message: String) {
        self.events.push(PendingEvent { warning: false, reason: reason.to_string(), message, on_change_of: None });
    }

    /// A Warning event, every time.
    pub fn warn(&mut self, reason: &'static str, message: String) {
        self.events.push(PendingEvent { warning: true, reason: reason.to_string(), message, on_change_of: None });
    }

    /// Writes the status (when it changed), publishes the events, and turns the outcome into
    /// the controller's answer.
    pub async fn finish(self, ctx: &Context, outcome: Outcome) -> Result<Action, ReconcileError> {
        if !matches!(outcome, Outcome::Gone) {
            crate::controllers::apply_status(ctx, self.machine, self.machine.status.as_ref(), &self.status).await?;
        }
        let before = self.machine.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        for event in &self.events {
            if let Some(kind) = event.on_change_of {
                let old = conditions::get(before, kind);
                let new = conditions::get(&self.status.conditions, kind);
                if old.map(|c| &c.reason) == new.map(|c| &c.reason) {
                    continue;
                }
            }
            ctx.event(self.machine, event.warning, &event.reason, &event.message).await;
        }
        let object = format!(
            "SSHMachine/{}/{}",
            self.machine.metadata.namespace.as_deref().unwrap_or_default(),
            self.machine.metadata.name.as_deref().unwrap_or_default()
        );
        if self.host_answered {
            ctx.unreachable.clear(&object);
        }
        match outcome {
            Outcome::HostFailed(err) => Ok(Action::requeue(ctx.retry_after(&object, &err))),
            Outcome::AwaitChange | Outcome::Gone => Ok(Action::await_change()),
            Outcome::After(after) => Ok(Action::requeue(after)),
            Outcome::StillWorking { what, after } => Err(ReconcileError::StillWorking { what, retry_after: after }),
            Outcome::Error(err) => Err(err),
        }
    }
}
