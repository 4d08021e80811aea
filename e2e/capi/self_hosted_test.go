package capie2e

import (
	. "github.com/onsi/ginkgo/v2"
	"k8s.io/utils/ptr"

	"sigs.k8s.io/cluster-api/test/e2e"
)

// One control plane and one worker of the topology flavor (upstream's plain self-hosted case),
// made from the management cluster. The spec runs `clusterctl init` on that cluster with the
// suite's clusterctl config (its images and cert-manager come from -capssh.clusterctl-settings in
// an air-gapped sandbox), `clusterctl move`s the spec's namespace there (SSHHosts, their
// credentials and the labelled objects of the hosts directory included; the hosts hook registers
// nothing on the new cluster), checks that no Machine rolled out, and moves everything back
// before the cluster is deleted. No Kubernetes upgrade.
var _ = Describe("capssh self-hosted, topology flavor (ClusterClass ssh)", Label("self-hosted", "ClusterClass"), func() {
	e2e.SelfHostedSpec(ctx, func() e2e.SelfHostedSpecInput {
		requireFiles(TemplateFile("topology"), "clusterclass-ssh.yaml")
		return e2e.SelfHostedSpecInput{
			E2EConfig:                e2eConfig,
			ClusterctlConfigPath:     clusterctlConfigPath,
			BootstrapClusterProxy:    bootstrapClusterProxy,
			ArtifactFolder:           artifactFolder,
			SkipCleanup:              skipCleanup,
			Flavor:                   "topology", // this input takes a string, not a pointer
			InfrastructureProvider:   ptr.To(infrastructureProvider),
			SkipUpgrade:              true,
			ControlPlaneMachineCount: ptr.To[int64](1),
			WorkerMachineCount:       ptr.To[int64](1),
			PostNamespaceCreated:     hostsHook(),
		}
	})
})
