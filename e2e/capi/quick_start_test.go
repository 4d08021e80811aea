package capie2e

import (
	. "github.com/onsi/ginkgo/v2"
	"k8s.io/utils/ptr"

	"sigs.k8s.io/cluster-api/test/e2e"
	"sigs.k8s.io/cluster-api/test/framework/clusterctl"
)

// quickStart runs Cluster API's QuickStartSpec (one control-plane machine, one worker) on a
// flavor; extra names the other files the flavor needs from the repository.
func quickStart(flavor string, extra ...string) {
	e2e.QuickStartSpec(ctx, func() e2e.QuickStartSpecInput {
		requireFiles(append([]string{TemplateFile(flavor)}, extra...)...)
		input := e2e.QuickStartSpecInput{
			E2EConfig:              e2eConfig,
			ClusterctlConfigPath:   clusterctlConfigPath,
			BootstrapClusterProxy:  bootstrapClusterProxy,
			ArtifactFolder:         artifactFolder,
			SkipCleanup:            skipCleanup,
			InfrastructureProvider: ptr.To(infrastructureProvider),
			PostNamespaceCreated:   hostsHook(),
		}
		if flavor != clusterctl.DefaultFlavor {
			input.Flavor = ptr.To(flavor)
		}
		return input
	})
}

var _ = Describe("capssh quick-start, default flavor (kube-vip VIP)", Label("quick-start"), func() {
	quickStart(clusterctl.DefaultFlavor)
})

var _ = Describe("capssh quick-start, topology flavor (ClusterClass ssh)", Label("quick-start", "ClusterClass"), func() {
	quickStart("topology", "clusterclass-ssh.yaml")
})
