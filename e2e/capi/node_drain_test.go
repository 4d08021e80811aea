package capie2e

import (
	"context"
	"fmt"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/test/e2e"
	"sigs.k8s.io/cluster-api/test/framework"
)

// Three control planes and one worker of the topology flavor (ClusterClass ssh). The spec labels
// the Nodes through the topology, adds MachineDrainRules, Deployments of registry.k8s.io/pause
// Pods that drain in order, wait for completion or are held by a PodDisruptionBudget, and (as
// upstream's own call of the spec does) an attached VolumeAttachment per Node, then scales the
// control plane to 1 and md-0 to 0 and follows each drain step on the real Nodes. Four hosts at
// the peak (three control-plane, one worker); nothing rolls out.
var _ = Describe("capssh node drain (topology flavor, 3 control planes + 1 worker drained to 1 + 0)", Label("node-drain", "ClusterClass"), func() {
	e2e.NodeDrainTimeoutSpec(ctx, func() e2e.NodeDrainTimeoutSpecInput {
		requireFiles(TemplateFile("topology"), "clusterclass-ssh.yaml")
		return e2e.NodeDrainTimeoutSpecInput{
			E2EConfig:                 e2eConfig,
			ClusterctlConfigPath:      clusterctlConfigPath,
			BootstrapClusterProxy:     bootstrapClusterProxy,
			ArtifactFolder:            artifactFolder,
			SkipCleanup:               skipCleanup,
			InfrastructureProvider:    ptr.To(infrastructureProvider),
			Flavor:                    ptr.To("topology"),
			PostNamespaceCreated:      hostsHook(),
			VerifyNodeVolumeDetach:    true,
			CreateAdditionalResources: createVolumeAttachments,
		}
	})
})

// createVolumeAttachments is upstream's CreateAdditionalResources for this spec
// (test/e2e/node_drain_test.go): one VolumeAttachment per Node, with no CSI driver behind it,
// marked attached and held by a finalizer, so that it blocks the Machine's deletion until the
// spec sets the volume-detach timeout.
func createVolumeAttachments(ctx context.Context, clusterProxy framework.ClusterProxy, cluster *clusterv1.Cluster) {
	workloadClusterClient := clusterProxy.GetWorkloadCluster(ctx, cluster.Namespace, cluster.Name).GetClient()

	nodeList := &corev1.NodeList{}
	Expect(workloadClusterClient.List(ctx, nodeList)).To(Succeed())

	for _, node := range nodeList.Items {
		va := volumeAttachment(node)
		Expect(workloadClusterClient.Create(ctx, va)).To(Succeed())
		va.Status.Attached = true
		Expect(workloadClusterClient.Status().Update(ctx, va)).To(Succeed())
	}
}

// volumeAttachment is upstream's generateVolumeAttachment.
func volumeAttachment(node corev1.Node) *storagev1.VolumeAttachment {
	return &storagev1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{
			Name:       fmt.Sprintf("va-%s", node.GetName()),
			Finalizers: []string{"test.cluster.x-k8s.io/block"},
		},
		Spec: storagev1.VolumeAttachmentSpec{
			Attacher: "manual",
			NodeName: node.GetName(),
			Source: storagev1.VolumeAttachmentSource{
				PersistentVolumeName: ptr.To("foo"),
			},
		},
	}
}
