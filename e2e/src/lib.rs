//! The ground capssh's end-to-end suites stand on: real processes, started and torn down here.
//!
//! - [`mgmt`]: a management plane (etcd + kube-apiserver built by hack/tools) on 127.0.0.1;
//! - [`capi_managers`]: Cluster API's own managers (and kube-controller-manager's garbage collector) as local processes;
//! - [`apply`]: server-side apply of YAML files, as `kubectl apply --server-side` would;
//! - [`tools`]: where the upstream tools and the capssh binary are;
//! - [`process`]: child processes that cannot outlive the test process;
//! - [`release`]: Cluster API and capssh installed by `clusterctl init` from a local repository;
//! - [`bench`]: the provisioning benchmark (`make bench`);
//! - [`capi_specs`]: Cluster API's own e2e specs (e2e/capi) against a management cluster a suite made;
//! - [`images`]: OCI image archives built without a container engine ([`addon_images`]: kube-proxy,
//!   CoreDNS, kube-router, agnhost); [`registry`]: a registry with TLS and auth.

pub mod addon_images;
pub mod apply;
pub mod bench;
pub mod capi;
pub mod capi_managers;
pub mod capi_specs;
pub mod chaos;
pub mod clusterctl;
pub mod conformance;
pub mod hosts;
pub mod images;
pub mod installed;
pub mod manager;
pub mod mgmt;
pub mod mirror;
pub mod nodes;
pub mod pkgrepo;
pub mod pki;
pub mod process;
pub mod provider_pods;
pub mod registry;
pub mod release;
pub mod sandbox;
pub mod scenario;
pub mod tools;
pub mod workload;
pub mod workload_checks;
