package capie2e

import (
	. "github.com/onsi/ginkgo/v2"
	"k8s.io/utils/ptr"

	"sigs.k8s.io/cluster-api/test/e2e"
)

// One control plane and one worker of the topology flavor (ClusterClass ssh, inline patches
// only: no Runtime SDK extension, so no ExtensionConfig). The spec rebases the Cluster onto a
// copy of the ClusterClass with a new worker label, points the copy at a KubeadmControlPlaneTemplate
// with kubeadm verbosity 4 (the control plane rolls out), and md-0's class at a
// KubeadmConfigTemplate with verbosity 4 and an SSHMachineTemplate with bootstrapTimeoutSeconds
// 3600 (md-0 rolls out), rebases onto a copy of the original in another namespace (both roll
// back), changes that copy the same way (both roll out a third time), and removes md-0 from the
// topology. The rollouts overlap (the spec waits for the objects, not the Machines): with
// maxSurge 1 for KCP and md-0, two control-plane hosts and two worker hosts at the peak.
var _ = Describe("capssh ClusterClass changes and rebases (topology flavor)", Label("clusterclass-changes", "ClusterClass"), func() {
	e2e.ClusterClassChangesSpec(ctx, func() e2e.ClusterClassChangesSpecInput {
		requireFiles(TemplateFile("topology"), "clusterclass-ssh.yaml")
		return e2e.ClusterClassChangesSpecInput{
			E2EConfig:              e2eConfig,
			ClusterctlConfigPath:   clusterctlConfigPath,
			BootstrapClusterProxy:  bootstrapClusterProxy,
			ArtifactFolder:         artifactFolder,
			SkipCleanup:            skipCleanup,
			InfrastructureProvider: ptr.To(infrastructureProvider),
			Flavor:                 "topology", // this input takes a string, not a pointer
			PostNamespaceCreated:   hostsHook(),
			// As upstream's call of the spec: set on the ClusterClass's KubeadmControlPlaneTemplate
			// (without .spec.template), checked on the KubeadmControlPlane.
			ModifyControlPlaneFields: map[string]interface{}{
				"spec.kubeadmConfigSpec.verbosity": int64(4),
			},
			// As upstream's call: set on md-0's KubeadmConfigTemplate, checked on the one md-0 uses.
			ModifyMachineDeploymentBootstrapConfigTemplateFields: map[string]interface{}{
				"spec.template.spec.verbosity": int64(4),
			},
			// capssh's own: upstream sets a field of its in-memory backend. bootstrapTimeoutSeconds
			// (unset in the ClusterClass: no limit) is a plain integer capssh keeps as written; an
			// hour is far above a bootstrap's few minutes here.
			ModifyMachineDeploymentInfrastructureMachineTemplateFields: map[string]interface{}{
				"spec.template.spec.bootstrapTimeoutSeconds": int64(3600),
			},
		}
	})
})
