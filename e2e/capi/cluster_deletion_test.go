package capie2e

import (
	"slices"

	. "github.com/onsi/ginkgo/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"sigs.k8s.io/cluster-api/test/e2e"
	"sigs.k8s.io/cluster-api/test/framework/clusterctl"
)

// Deletes a default-flavor cluster and checks the order Cluster API promises, one phase at a
// time: first the workers (md-0, its MachineSet and their Machines), then the control plane
// (the KubeadmControlPlane and its Machines), last the SSHCluster. The spec holds each phase's
// blocking objects with a finalizer to see that nothing of a later phase goes before them.
var _ = Describe("capssh cluster deletion, phase by phase", Label("cluster-deletion"), func() {
	e2e.ClusterDeletionSpec(ctx, func() e2e.ClusterDeletionSpecInput {
		requireFiles(TemplateFile(clusterctl.DefaultFlavor))
		return e2e.ClusterDeletionSpecInput{
			E2EConfig:              e2eConfig,
			ClusterctlConfigPath:   clusterctlConfigPath,
			BootstrapClusterProxy:  bootstrapClusterProxy,
			ArtifactFolder:         artifactFolder,
			SkipCleanup:            skipCleanup,
			InfrastructureProvider: ptr.To(infrastructureProvider),
			PostNamespaceCreated:   hostsHook(),
			ClusterDeletionPhases: []e2e.ClusterDeletionPhase{
				deletionPhase("Machine", []string{"MachineDeployment", "MachineSet"}, "MachineDeployment", "MachineSet"),
				deletionPhase("Machine", []string{"KubeadmControlPlane"}, "KubeadmControlPlane"),
				deletionPhase("SSHCluster", nil, "SSHCluster"),
			},
		}
	})
})

// deletionPhase is one phase: the objects of the given kinds, plus the Machines owned by one of
// machineOwners, go in it; of those, the ones of kind blocking are held to observe the order.
func deletionPhase(blocking string, machineOwners []string, kinds ...string) e2e.ClusterDeletionPhase {
	return e2e.ClusterDeletionPhase{
		ObjectFilter: func(ref corev1.ObjectReference, owners []metav1.OwnerReference) bool {
			if slices.Contains(kinds, ref.Kind) {
				return true
			}
			return ref.Kind == "Machine" && slices.ContainsFunc(owners, func(o metav1.OwnerReference) bool {
				return slices.Contains(machineOwners, o.Kind)
			})
		},
		BlockingObjectFilter: func(ref corev1.ObjectReference, _ []metav1.OwnerReference) bool {
			return ref.Kind == blocking
		},
	}
}
