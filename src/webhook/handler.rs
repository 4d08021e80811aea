//! HTTP side of the template webhook: AdmissionReview in, AdmissionReview out.

use super::check_template_update;
use axum::{Json, Router, routing::post};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

/// Paths follow controller-runtime's convention, so the manifests look like every provider's.
pub const MACHINE_TEMPLATE_PATH: &str = "/validate-infrastructure-cluster-x-k8s-io-v1alpha1-sshmachinetemplate";
pub const CLUSTER_TEMPLATE_PATH: &str = "/validate-infrastructure-cluster-x-k8s-io-v1alpha1-sshclustertemplate";

pub fn router() -> Router {
    Router::new()
        .route(MACHINE_TEMPLATE_PATH, post(|review| review_template(review, "SSHMachineTemplate")))
        .route(CLUSTER_TEMPLATE_PATH, post(|review| review_template(review, "SSHClusterTemplate")))
}

async fn review_template(Json(review): Json<AdmissionReview<DynamicObject>>, kind: &'static str) -> Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(err) => {
            tracing::warn!(error = %err, "malformed AdmissionReview");
            return Json(AdmissionResponse::invalid(err.to_string()).into_review());
        }
    };
    let response = AdmissionResponse::from(&request);
    let verdict = match (&request.operation, &request.old_object, &request.object) {
        (Operation::Update, Some(old), Some(new)) => {
            let (old, new) = (to_value(old), to_value(new));
            check_template_update(kind, &old, &new, request.dry_run)
        }
        _ => Ok(()),
    };
    let response = match verdict {
        Ok(()) => response,
        Err(reason) => {
            tracing::info!(kind, name = %request.name, %reason, "refused template update");
            response.deny(reason)
        }
    };
    Json(response.into_review())
}

fn to_value(obj: &DynamicObject) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}
