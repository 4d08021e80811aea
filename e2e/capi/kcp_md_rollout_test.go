package capie2e

import (
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"sigs.k8s.io/cluster-api/test/e2e"
)

// One control plane and one worker of the kcp-md-taints flavor (the default flavor with two
// Machine taints on the KubeadmControlPlane and on md-0, as upstream's flavor of that name). The
// spec changes md-0's labels, annotations and deletion timeouts and the taints of both in place
// (no Machine may be replaced), then points md-0 at a copy of its SSHMachineTemplate: md-0 rolls
// out with maxSurge 1, so one control-plane host and two worker hosts at the peak.
var _ = Describe("capssh KCP and MachineDeployment rollout, taints in place (kcp-md-taints flavor)", Label("kcp-md-rollout"), func() {
	e2e.KCPAndMachineDeploymentRolloutSpec(ctx, func() e2e.KCPAndMachineDeploymentRolloutSpecInput {
		requireFiles(TemplateFile("kcp-md-taints"))
		requireFeatureGate("MachineTaintPropagation")
		return e2e.KCPAndMachineDeploymentRolloutSpecInput{
			E2EConfig:              e2eConfig,
			ClusterctlConfigPath:   clusterctlConfigPath,
			BootstrapClusterProxy:  bootstrapClusterProxy,
			ArtifactFolder:         artifactFolder,
			SkipCleanup:            skipCleanup,
			Flavor:                 "kcp-md-taints", // this input takes a string, not a pointer
			InfrastructureProvider: ptr.To(infrastructureProvider),
			PostNamespaceCreated:   hostsHook(),
		}
	})
})

// featureGateManagers are the Deployments (namespace, name) of the Cluster API managers whose
// webhooks and controllers read the feature gates the specs need, as `clusterctl init` names them.
var featureGateManagers = [...][2]string{
	{"capi-system", "capi-controller-manager"},
	{"capi-kubeadm-control-plane-system", "capi-kubeadm-control-plane-controller-manager"},
}

// requireFeatureGate fails early, and says why, when a Cluster API manager on the management
// cluster runs without gate=true in its --feature-gates (Cluster API's alpha gates are off unless
// `clusterctl init` had the gate's EXP_* variable set): its webhooks would refuse the flavor.
func requireFeatureGate(gate string) {
	for _, manager := range featureGateManagers {
		deployment := &appsv1.Deployment{}
		key := client.ObjectKey{Namespace: manager[0], Name: manager[1]}
		Expect(bootstrapClusterProxy.GetClient().Get(ctx, key, deployment)).To(Succeed(),
			"reading the Deployment %s of the management cluster (to check the feature gate %s)", key, gate)
		enabled := false
		for _, container := range deployment.Spec.Template.Spec.Containers {
			for _, arg := range container.Args {
				if gates, ok := strings.CutPrefix(arg, "--feature-gates="); ok && hasGate(gates, gate) {
					enabled = true
				}
			}
		}
		Expect(enabled).To(BeTrue(), "%s runs without --feature-gates=...%s=true: `clusterctl init` the management cluster with the matching EXP_* variable set to \"true\" (config/capssh.yaml sets it for the suite's own init)", key, gate)
	}
	fmt.Fprintf(GinkgoWriter, "The feature gate %s is on in Cluster API's managers\n", gate)
}

// hasGate tells whether a --feature-gates value (Name=bool,Name=bool) turns gate on.
func hasGate(gates, gate string) bool {
	for _, entry := range strings.Split(gates, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(entry), "=")
		if name == gate && strings.EqualFold(value, "true") {
			return true
		}
	}
	return false
}
