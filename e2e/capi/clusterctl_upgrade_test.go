package capie2e

import (
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/utils/ptr"

	"sigs.k8s.io/cluster-api/test/e2e"
	"sigs.k8s.io/cluster-api/test/framework/clusterctl"
)

// capiVersion is Cluster API's release on both sides of the upgrade: capssh's releases v0.1.0
// and the current one implement the same contract (v1beta2), so only capssh changes.
const capiVersion = "v1.14.2"

// From the management cluster, a cluster of the current release's default flavor (1 control
// plane + 1 worker, hosts of -capssh.hosts-dir) is made and turned into a second management
// cluster: the old clusterctl (-capssh.old-clusterctl-url) installs Cluster API v1.14.2 and
// capssh's previous release there. That cluster makes a workload cluster (1 + 1, md-0 later
// 1 -> 2 -> 1, hosts of -capssh.second-hosts-dir) from the previous release's flavor "previous".
// Then `clusterctl upgrade` (the library of v1.14.2) moves ssh to the current release with the
// three Cluster API providers named at v1.14.2 (they stay), checks that no Machine rolled out,
// scales md-0, checks that the Cluster's objects stop changing, and deletes everything.
//
// The previous release must be in the e2e config: setUpOnce adds it from CAPSSH_PREVIOUS_VERSION,
// CAPSSH_PREVIOUS_RELEASE_DIR and CAPSSH_E2E_PREVIOUS_FLAVOR (config.go, AddPreviousRelease).
var _ = Describe("capssh clusterctl upgrade from the previous release", Label("clusterctl-upgrade"), func() {
	e2e.ClusterctlUpgradeSpec(ctx, func() e2e.ClusterctlUpgradeSpecInput {
		previous, current := upgradeVersions()
		Expect(options.oldClusterctlURL).ToNot(BeEmpty(),
			"clusterctl-upgrade needs the old clusterctl's URL: set -capssh.old-clusterctl-url or %s", OldClusterctlURLVariable)
		Expect(options.secondHostsDir).ToNot(BeEmpty(),
			"clusterctl-upgrade needs a second hosts folder (other boxes, for the workload cluster of the cluster it makes): set -capssh.second-hosts-dir or %s", SecondHostsDirVariable)
		Expect(options.secondHostsDir).To(BeADirectory(), "-capssh.second-hosts-dir (%s)", SecondHostsDirVariable)
		Expect(filepath.Clean(options.secondHostsDir)).ToNot(Equal(filepath.Clean(options.hostsDir)),
			"-capssh.second-hosts-dir must name other boxes than -capssh.hosts-dir: a box stands for one SSHHost at a time")
		for _, provider := range []string{"cluster-api", "kubeadm"} {
			Expect(e2eConfig.GetProviderVersions(provider)).To(ContainElement(capiVersion), "the e2e config has no %s %s", provider, capiVersion)
		}

		// The second management cluster: the current release's default flavor, from the
		// management cluster, where the current release runs.
		requireFiles(TemplateFile(clusterctl.DefaultFlavor))
		// The workload cluster: flavor "previous", in the previous version's folder only.
		flavor := ProviderVersionFile(e2eConfig, infrastructureProvider, previous, TemplateFile(PreviousFlavor))
		Expect(flavor).ToNot(BeEmpty(), "the e2e config publishes no %s for %s %s: set %s when the suite starts",
			TemplateFile(PreviousFlavor), infrastructureProvider, previous, PreviousFlavorVariable)
		Expect(requireGenerated(flavor)).To(Succeed(), "%s of %s %s", TemplateFile(PreviousFlavor), infrastructureProvider, previous)
		// `clusterctl upgrade` reads the newest version's metadata.yaml: it must have a release
		// series for the installed (previous) version too, or the upgrade is refused after the
		// two clusters were made.
		metadata := ProviderVersionFile(e2eConfig, infrastructureProvider, current, "metadata.yaml")
		Expect(metadata).ToNot(BeEmpty(), "the e2e config publishes no metadata.yaml for %s %s", infrastructureProvider, current)
		_, err := ReleaseContract(metadata, previous)
		Expect(err).ToNot(HaveOccurred(), "clusterctl upgrade from %s", previous)

		return e2e.ClusterctlUpgradeSpecInput{
			E2EConfig:             e2eConfig,
			ClusterctlConfigPath:  clusterctlConfigPath,
			BootstrapClusterProxy: bootstrapClusterProxy,
			ArtifactFolder:        artifactFolder,
			SkipCleanup:           skipCleanup,
			// kind is not available here: the second management cluster is a workload cluster
			// of this provider.
			UseKindForManagementCluster:     false,
			MgmtFlavor:                      clusterctl.DefaultFlavor,
			InitWithBinary:                  options.oldClusterctlURL,
			InitWithKubernetesVersion:       e2eConfig.MustGetVariable(e2e.KubernetesVersion),
			InitWithCoreProvider:            "cluster-api:" + capiVersion,
			InitWithBootstrapProviders:      []string{"kubeadm:" + capiVersion},
			InitWithControlPlaneProviders:   []string{"kubeadm:" + capiVersion},
			InitWithInfrastructureProviders: []string{infrastructureProvider + ":" + previous},
			WorkloadFlavor:                  PreviousFlavor,
			Upgrades: []e2e.ClusterctlUpgradeSpecInputUpgrade{{
				CoreProvider:            "cluster-api:" + capiVersion,
				BootstrapProviders:      []string{"kubeadm:" + capiVersion},
				ControlPlaneProviders:   []string{"kubeadm:" + capiVersion},
				InfrastructureProviders: []string{infrastructureProvider + ":" + current},
			}},
			InfrastructureProvider: ptr.To(infrastructureProvider),
			PostNamespaceCreated:   twoClusterHostsHook(),
		}
	})
})

// upgradeVersions returns the previous release's version (CAPSSH_PREVIOUS_VERSION) and the
// current one: the other version of the ssh provider in the e2e config (${CAPSSH_VERSION}). It
// fails the spec, saying what is missing, when the suite started without the previous release.
func upgradeVersions() (previous, current string) {
	previous = os.Getenv(PreviousVersionVariable)
	Expect(previous).ToNot(BeEmpty(),
		"clusterctl-upgrade needs capssh's previous release in the clusterctl repository: set %s, %s and %s when the suite starts",
		PreviousVersionVariable, PreviousReleaseDirVariable, PreviousFlavorVariable)
	versions := e2eConfig.GetProviderVersions(infrastructureProvider)
	Expect(versions).To(ContainElement(previous), "%s %s is not in the e2e config: %s and %s must be set when the suite starts",
		infrastructureProvider, previous, PreviousVersionVariable, PreviousReleaseDirVariable)
	var others []string
	for _, v := range versions {
		if v != previous {
			others = append(others, v)
		}
	}
	Expect(others).To(HaveLen(1), "the e2e config's %s versions besides %s (the current release)", infrastructureProvider, previous)
	return previous, others[0]
}
