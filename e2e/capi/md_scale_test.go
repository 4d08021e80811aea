package capie2e

import (
	. "github.com/onsi/ginkgo/v2"
	"k8s.io/utils/ptr"

	"sigs.k8s.io/cluster-api/test/e2e"
	"sigs.k8s.io/cluster-api/test/framework/clusterctl"
)

// The default flavor's md-0 goes from one worker to three and back: three worker hosts.
var _ = Describe("capssh workers scale out and in (MachineDeployment 1, 3, 1)", Label("md-scale"), func() {
	e2e.MachineDeploymentScaleSpec(ctx, func() e2e.MachineDeploymentScaleSpecInput {
		requireFiles(TemplateFile(clusterctl.DefaultFlavor))
		return e2e.MachineDeploymentScaleSpecInput{
			E2EConfig:              e2eConfig,
			ClusterctlConfigPath:   clusterctlConfigPath,
			BootstrapClusterProxy:  bootstrapClusterProxy,
			ArtifactFolder:         artifactFolder,
			SkipCleanup:            skipCleanup,
			Flavor:                 clusterctl.DefaultFlavor, // this input takes a string, not a pointer
			InfrastructureProvider: ptr.To(infrastructureProvider),
			PostNamespaceCreated:   hostsHook(),
		}
	})
})
