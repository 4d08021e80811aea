package capie2e

// The suite runs Cluster API's own end-to-end specs (sigs.k8s.io/cluster-api/test/e2e), unchanged,
// against the ssh infrastructure provider. It never creates a management cluster: it works in the
// one KUBECONFIG names, installs the providers there only when none run yet, and leaves it as it
// found it. The e2e.* options keep the names Cluster API's suites use, so a harness drives both
// the same way; the capssh.* options are this suite's own.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/component-base/logs"
	logsv1 "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"sigs.k8s.io/cluster-api/test/e2e"
	"sigs.k8s.io/cluster-api/test/framework"
	"sigs.k8s.io/cluster-api/test/framework/clusterctl"
	"sigs.k8s.io/cluster-api/test/framework/ginkgoextensions"
)

// The infrastructure provider under test, as clusterctl names it.
const infrastructureProvider = "ssh"

// options are the command-line settings (see registerOptions).
var options struct {
	configFile         string
	artifactsDir       string
	clusterctlConfig   string
	clusterctlSettings string
	ginkgoLogFile      bool
	keepResources      bool
	existingCluster    bool
	hostsDir           string
	secondHostsDir     string
	oldClusterctlURL   string
	logging            *logsv1.LoggingConfiguration
}

// What every spec reads, filled in by the SynchronizedBeforeSuite.
var (
	ctx                       = ctrl.SetupSignalHandler()
	watchesCtx, cancelWatches = context.WithCancel(ctx)

	// The e2e config, with ${CAPSSH_*} filled in.
	e2eConfig *clusterctl.E2EConfig
	// The clusterctl config that points at the local provider repository (or -e2e.clusterctl-config).
	clusterctlConfigPath string
	// The existing management cluster.
	bootstrapClusterProxy framework.ClusterProxy
	// Where everything the run leaves behind goes (the artifacts folder).
	artifactFolder string
	// -e2e.skip-resource-cleanup, as the spec inputs call it.
	skipCleanup bool
)

func init() { registerOptions(flag.CommandLine) }

func registerOptions(fs *flag.FlagSet) {
	fs.StringVar(&options.configFile, "e2e.config", "",
		"the e2e config file (config/capssh.yaml); its ${CAPSSH_*} references are filled from the environment before it is read")
	fs.StringVar(&options.artifactsDir, "e2e.artifacts-folder", "",
		"folder for what the run leaves behind: the clusterctl repository, controller and host logs, resource dumps ($ARTIFACTS overrides it)")
	fs.BoolVar(&options.ginkgoLogFile, "e2e.also-log-to-file", true,
		"also write the Ginkgo output, timestamped, to ginkgo-log.txt in the artifacts folder")
	fs.BoolVar(&options.keepResources, "e2e.skip-resource-cleanup", false,
		"leave every spec's workload Cluster and namespace in place when it ends, for inspection")
	fs.StringVar(&options.clusterctlConfig, "e2e.clusterctl-config", "",
		"a clusterctl config to use as it is; when empty the suite builds a local provider repository from the e2e config and writes its own")
	fs.BoolVar(&options.existingCluster, "e2e.use-existing-cluster", true,
		"only true is supported: the management cluster is always the existing one KUBECONFIG names")
	fs.StringVar(&options.hostsDir, "capssh.hosts-dir", os.Getenv("CAPSSH_E2E_HOSTS_DIR"),
		"folder of YAML files with the SSHHosts and credentials Secrets (namespace ${NAMESPACE}) registered in each spec's namespace; defaults to $CAPSSH_E2E_HOSTS_DIR")
	fs.StringVar(&options.secondHostsDir, "capssh.second-hosts-dir", os.Getenv(SecondHostsDirVariable),
		"clusterctl-upgrade only: a hosts folder like -capssh.hosts-dir naming other boxes, registered on the management cluster that spec makes (for its workload cluster); defaults to $"+SecondHostsDirVariable)
	fs.StringVar(&options.oldClusterctlURL, "capssh.old-clusterctl-url", os.Getenv(OldClusterctlURLVariable),
		"clusterctl-upgrade only: the http(s) URL of the clusterctl binary that installs the previous release ({OS} and {ARCH} are filled in); defaults to $"+OldClusterctlURLVariable)
	fs.StringVar(&options.clusterctlSettings, "capssh.clusterctl-settings", os.Getenv(ClusterctlSettingsVariable),
		"a YAML file whose top-level keys (e.g. images, cert-manager) are written into the clusterctl config the suite generates; defaults to $"+ClusterctlSettingsVariable)
	options.logging = logs.NewOptions()
	logsv1.AddGoFlags(options.logging, fs)
}

func TestE2E(t *testing.T) {
	if err := logsv1.ValidateAndApply(options.logging, nil); err != nil {
		t.Fatalf("the logging options are not valid: %v", err)
	}
	ctrl.SetLogger(klog.Background())

	dir, err := artifactsDir()
	if err != nil {
		t.Fatal(err)
	}
	artifactFolder = dir
	skipCleanup = options.keepResources

	RegisterFailHandler(Fail)
	if options.ginkgoLogFile {
		logFile, err := ginkgoextensions.EnableFileLogging(filepath.Join(dir, "ginkgo-log.txt"))
		if err != nil {
			t.Fatalf("ginkgo-log.txt: %v", err)
		}
		defer logFile.Close()
	}
	RunSpecs(t, "capssh: Cluster API e2e specs")
}

// artifactsDir is $ARTIFACTS when set (CI systems collect that folder), else
// -e2e.artifacts-folder; it is created if needed.
func artifactsDir() (string, error) {
	dir := options.artifactsDir
	if fromEnv, ok := os.LookupEnv("ARTIFACTS"); ok {
		dir = fromEnv
	}
	if dir == "" {
		return "", errors.New("no artifacts folder: pass -e2e.artifacts-folder (or set ARTIFACTS)")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("artifacts folder %s: %w", dir, err)
	}
	return filepath.Abs(dir)
}

// sharedSetup is what the first Ginkgo process hands the others (all of them, itself included).
type sharedSetup struct {
	Artifacts        string `json:"artifacts"`
	E2EConfig        string `json:"e2eConfig"`
	ClusterctlConfig string `json:"clusterctlConfig"`
	Kubeconfig       string `json:"kubeconfig"`
}

var _ = SynchronizedBeforeSuite(setUpOnce, setUpEachProcess)

// setUpOnce runs on the first process only: it prepares the config and the clusterctl repository
// and makes sure the providers run on the management cluster.
func setUpOnce() []byte {
	Expect(options.existingCluster).To(BeTrue(),
		"-e2e.use-existing-cluster=false asks for a new kind cluster, which this suite never creates: point KUBECONFIG at the management cluster")
	Expect(options.configFile).To(BeAnExistingFile(), "-e2e.config must name the e2e config file (e.g. e2e/capi/config/capssh.yaml)")

	ginkgoextensions.Byf("Filling ${CAPSSH_*} into %s", options.configFile)
	expanded, err := ExpandConfig(options.configFile, artifactFolder)
	Expect(err).ToNot(HaveOccurred())
	// ClusterctlUpgrade's previous release, added to the expanded file itself: setUpEachProcess
	// reads that file again, and buildProviderRepository publishes every version in it.
	previous, hasPrevious, err := PreviousReleaseFromEnv()
	Expect(err).ToNot(HaveOccurred(), "the previous release (for clusterctl-upgrade)")
	if hasPrevious {
		ginkgoextensions.Byf("Adding %s %s from %s to the e2e config", infrastructureProvider, previous.Version, previous.Dir)
		Expect(AddPreviousRelease(expanded, infrastructureProvider, previous)).To(Succeed())
	}
	config := readE2EConfig(expanded)
	if hasPrevious {
		// clusterctl takes the newest version in the repository whenever none is named (this
		// suite's own init, every spec's `clusterctl generate cluster` on the management cluster).
		Expect(config.GetProviderLatestVersionsByContract("*", infrastructureProvider)).ToNot(ContainElement(infrastructureProvider+":"+previous.Version),
			"%s=%s must be older than the current release of the e2e config", PreviousVersionVariable, previous.Version)
	}

	repositoryConfig := options.clusterctlConfig
	if repositoryConfig == "" {
		repositoryConfig = buildProviderRepository(config, filepath.Join(artifactFolder, "repository"))
		if options.clusterctlSettings != "" {
			keys, err := MergeClusterctlSettings(repositoryConfig, options.clusterctlSettings)
			Expect(err).ToNot(HaveOccurred(), "merging %s into %s", options.clusterctlSettings, repositoryConfig)
			ginkgoextensions.Byf("Merged %v from %s into the clusterctl config", keys, options.clusterctlSettings)
		}
	} else {
		Expect(options.clusterctlSettings).To(BeEmpty(), "-capssh.clusterctl-settings (or $%s) applies to the generated clusterctl config only, not to -e2e.clusterctl-config", ClusterctlSettingsVariable)
		ginkgoextensions.Byf("Using the clusterctl config given: %s", repositoryConfig)
	}

	kubeconfig := managementKubeconfig()
	ginkgoextensions.Byf("Management cluster: %s", kubeconfig)
	management := framework.NewClusterProxy("bootstrap", kubeconfig, newScheme())
	Expect(management).ToNot(BeNil(), "no client for the management cluster of %s", kubeconfig)

	By("Installing the providers with clusterctl init unless their controllers already run, and following their logs")
	clusterctl.InitManagementClusterAndWatchControllerLogs(watchesCtx, clusterctl.InitManagementClusterAndWatchControllerLogsInput{
		ClusterProxy:              management,
		ClusterctlConfigPath:      repositoryConfig,
		InfrastructureProviders:   config.InfrastructureProviders(),
		IPAMProviders:             config.IPAMProviders(),
		RuntimeExtensionProviders: config.RuntimeExtensionProviders(),
		AddonProviders:            config.AddonProviders(),
		LogFolder:                 filepath.Join(artifactFolder, "clusters", management.GetName()),
	}, config.GetIntervals(management.GetName(), "wait-controllers")...)

	shared, err := json.Marshal(sharedSetup{
		Artifacts:        artifactFolder,
		E2EConfig:        expanded,
		ClusterctlConfig: repositoryConfig,
		Kubeconfig:       kubeconfig,
	})
	Expect(err).ToNot(HaveOccurred())
	return shared
}

// setUpEachProcess gives every process the shared paths, the config and a management-cluster
// client whose machine logs come from the hosts over SSH.
func setUpEachProcess(data []byte) {
	var shared sharedSetup
	Expect(json.Unmarshal(data, &shared)).To(Succeed())
	artifactFolder = shared.Artifacts
	e2eConfig = readE2EConfig(shared.E2EConfig)
	clusterctlConfigPath = shared.ClusterctlConfig
	bootstrapClusterProxy = framework.NewClusterProxy("bootstrap", shared.Kubeconfig, newScheme(), framework.WithMachineLogCollector(SSHLogCollector{}))
}

// The management cluster stays as it is: no teardown, no provider removal.
var _ = SynchronizedAfterSuite(func() {}, func() {
	cancelWatches()
	if bootstrapClusterProxy != nil {
		bootstrapClusterProxy.Dispose(ctx)
	}
})

// managementKubeconfig is the kubeconfig file of the existing management cluster: $KUBECONFIG
// (a single file), else the client's default (~/.kube/config).
func managementKubeconfig() string {
	path := os.Getenv("KUBECONFIG")
	if path == "" {
		home, err := os.UserHomeDir()
		Expect(err).ToNot(HaveOccurred())
		path = filepath.Join(home, ".kube", "config")
	}
	Expect(path).To(BeAnExistingFile(), "KUBECONFIG must name one existing kubeconfig file (the management cluster's)")
	abs, err := filepath.Abs(path)
	Expect(err).ToNot(HaveOccurred())
	return abs
}

// newScheme knows the Kubernetes and Cluster API types the framework reads.
func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	framework.TryAddDefaultSchemes(s)
	return s
}

func readE2EConfig(path string) *clusterctl.E2EConfig {
	config := clusterctl.LoadE2EConfig(ctx, clusterctl.LoadE2EConfigInput{ConfigPath: path})
	Expect(config).ToNot(BeNil(), "the e2e config %s did not load", path)
	return config
}

// buildProviderRepository lays the config's providers and their files (the flavors) out as a
// clusterctl repository in folder and returns the clusterctl config that points at it. On the
// way, every `data: ${CNI_RESOURCES}` line of a template becomes a ConfigMap data key holding
// the manifests of the CNI variable's file.
func buildProviderRepository(config *clusterctl.E2EConfig, folder string) string {
	ginkgoextensions.Byf("Building a local clusterctl repository in %s", folder)
	input := clusterctl.CreateRepositoryInput{E2EConfig: config, RepositoryFolder: folder}

	Expect(config.HasVariable(e2e.CNIPath)).To(BeTrue(), "the e2e config sets no %s variable (the CNI manifest file)", e2e.CNIPath)
	cni := config.MustGetVariable(e2e.CNIPath)
	Expect(requireGenerated(cni)).To(Succeed(), "the CNI manifest (variable %s)", e2e.CNIPath)
	input.RegisterClusterResourceSetConfigMapTransformation(cni, e2e.CNIResources)

	written := clusterctl.CreateRepository(ctx, input)
	Expect(written).To(BeAnExistingFile(), "clusterctl.CreateRepository wrote no clusterctl config into %s", folder)
	return written
}

// hostsHook registers the SSHHosts in a spec's namespace (its PostNamespaceCreated), on the
// management cluster only.
func hostsHook() func(framework.ClusterProxy, string) {
	return suiteHosts().PostNamespaceCreated(ctx)
}

// twoClusterHostsHook is ClusterctlUpgrade's PostNamespaceCreated: the hosts of -capssh.hosts-dir
// on the management cluster (for the spec's management cluster), those of
// -capssh.second-hosts-dir on any other cluster (the one the spec made, for its workload cluster).
func twoClusterHostsHook() func(framework.ClusterProxy, string) {
	h := suiteHosts()
	h.SecondDir = options.secondHostsDir
	return h.PostNamespaceCreated(ctx)
}

func suiteHosts() Hosts {
	gone := e2eConfig.GetIntervals("default", "wait-hosts-released")
	if len(gone) == 0 {
		gone = []interface{}{"10m", "5s"}
	}
	return Hosts{Dir: options.hostsDir, GoneIntervals: gone, ManagementKubeconfig: bootstrapClusterProxy.GetKubeconfigPath()}
}

// requireFiles fails the spec when a file it needs from the e2e config (a flavor's template, a
// ClusterClass) is not published, missing, or generated from templates that changed since.
func requireFiles(targetNames ...string) {
	for _, name := range targetNames {
		path := ProviderFile(e2eConfig, infrastructureProvider, name)
		Expect(path).ToNot(BeEmpty(), "the e2e config publishes no %s for provider %s", name, infrastructureProvider)
		Expect(requireGenerated(path)).To(Succeed(), "%s of provider %s", name, infrastructureProvider)
	}
}
