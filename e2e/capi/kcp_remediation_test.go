package capie2e

import (
	"fmt"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"sigs.k8s.io/cluster-api/test/e2e"
)

// Three control-plane machines, no workers. The kcp-remediation flavor holds every control-plane
// bootstrap before kubeadm until the spec writes "pass" into a ConfigMap on the management
// cluster (data/generate.sh, hold_bootstrap), and checks only the Machines the spec labels
// mhc-test=fail. The held hosts call the management API server themselves, at the address the
// spec reads from the management cluster's kube-public/cluster-info.
var _ = Describe("capssh control-plane remediation by MachineHealthCheck (3 machines)", Label("kcp-remediation"), func() {
	e2e.KCPRemediationSpec(ctx, func() e2e.KCPRemediationSpecInput {
		requireFiles(TemplateFile("kcp-remediation"))
		requireClusterInfo()
		return e2e.KCPRemediationSpecInput{
			E2EConfig:              e2eConfig,
			ClusterctlConfigPath:   clusterctlConfigPath,
			BootstrapClusterProxy:  bootstrapClusterProxy,
			ArtifactFolder:         artifactFolder,
			SkipCleanup:            skipCleanup,
			InfrastructureProvider: ptr.To(infrastructureProvider),
			Flavor:                 ptr.To("kcp-remediation"),
			PostNamespaceCreated:   hostsHook(),
		}
	})
})

// requireClusterInfo fails early, and says why, when the management cluster lacks what the spec
// takes the hosts' route to it from: ConfigMap kube-public/cluster-info (kubeadm-made clusters
// have it) holding a kubeconfig whose cluster entry, named "", has a server URL.
func requireClusterInfo() {
	info := &corev1.ConfigMap{}
	key := client.ObjectKey{Namespace: "kube-public", Name: "cluster-info"}
	Expect(bootstrapClusterProxy.GetClient().Get(ctx, key, info)).To(Succeed(),
		"kcp-remediation sends the control-plane hosts to the management API server named in ConfigMap kube-public/cluster-info, and this management cluster has none")
	config, err := clientcmd.Load([]byte(info.Data["kubeconfig"]))
	Expect(err).ToNot(HaveOccurred(), "kube-public/cluster-info: data.kubeconfig is not a kubeconfig")
	entry, ok := config.Clusters[""]
	Expect(ok && entry.Server != "").To(BeTrue(), `kube-public/cluster-info: its kubeconfig has no cluster named "" with a server URL, which the spec reads`)
	fmt.Fprintf(GinkgoWriter, "The held control-plane hosts will call the management API server at %s: they must reach it\n", entry.Server)
}
