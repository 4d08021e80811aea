package capie2e

import (
	. "github.com/onsi/ginkgo/v2"
	"k8s.io/utils/ptr"

	"sigs.k8s.io/cluster-api/test/e2e"
)

// The md-remediation flavor adds a MachineHealthCheck on md-0's Machines: the spec sets the Node
// condition e2e.remediation.condition=False on one worker and waits until its Machine has been
// replaced by a healthy one. The replacement needs a free worker host: a spare one, or the same
// box once capssh has reset it.
var _ = Describe("capssh worker remediation by MachineHealthCheck", Label("md-remediation"), func() {
	e2e.MachineDeploymentRemediationSpec(ctx, func() e2e.MachineDeploymentRemediationSpecInput {
		requireFiles(TemplateFile("md-remediation"))
		return e2e.MachineDeploymentRemediationSpecInput{
			E2EConfig:              e2eConfig,
			ClusterctlConfigPath:   clusterctlConfigPath,
			BootstrapClusterProxy:  bootstrapClusterProxy,
			ArtifactFolder:         artifactFolder,
			SkipCleanup:            skipCleanup,
			InfrastructureProvider: ptr.To(infrastructureProvider),
			Flavor:                 ptr.To("md-remediation"),
			PostNamespaceCreated:   hostsHook(),
		}
	})
})
