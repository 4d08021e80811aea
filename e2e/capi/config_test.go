package capie2e

// Plain Go tests of config.go, no cluster: go test -run 'Test[^E]' . (TestE2E is the Ginkgo
// suite). They are compiled into the suite's binary too; there they skip themselves.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"sigs.k8s.io/cluster-api/test/framework/clusterctl"
)

// skipInE2ERun skips a unit test when the binary runs the e2e suite (-e2e.config is set).
func skipInE2ERun(t *testing.T) {
	t.Helper()
	if options.configFile != "" {
		t.Skip("an e2e run (-e2e.config is set)")
	}
}

const expandedConfig = `managementClusterName: capssh-e2e
providers:
- name: cluster-api
  type: CoreProvider
  versions:
  - name: v1.14.2
    type: url
    value: /repo/cluster-api/v1.14.2/core-components.yaml
    contract: v1beta2
- name: ssh
  type: InfrastructureProvider
  versions:
  - name: v0.2.0
    type: url
    value: /release/infrastructure-components.yaml
    contract: v1beta2
    files:
    - sourcePath: /release/metadata.yaml
  files:
  - sourcePath: /flavors/cluster-template.yaml
variables:
  KUBERNETES_VERSION: "v1.36.3"
  CLUSTER_TOPOLOGY: "true"
intervals:
  default/wait-cluster: ["10m", "10s"]
`

const twoSeriesMetadata = `apiVersion: clusterctl.cluster.x-k8s.io/v1alpha3
kind: Metadata
releaseSeries:
- major: 0
  minor: 1
  contract: v1beta2
- major: 0
  minor: 2
  contract: v1beta2
`

func decodeConfig(t *testing.T, data []byte) *clusterctl.E2EConfig {
	t.Helper()
	config := &clusterctl.E2EConfig{}
	if err := yaml.Unmarshal(data, config); err != nil {
		t.Fatalf("the result is no E2EConfig: %v\n%s", err, data)
	}
	config.Defaults() // as LoadE2EConfig: a file's targetName defaults to its source's base name
	return config
}

func sshProvider(t *testing.T, config *clusterctl.E2EConfig) clusterctl.ProviderConfig {
	t.Helper()
	for _, p := range config.Providers {
		if p.Name == "ssh" {
			return p
		}
	}
	t.Fatal("no ssh provider")
	return clusterctl.ProviderConfig{}
}

func TestAddProviderVersion(t *testing.T) {
	skipInE2ERun(t)
	previous := PreviousRelease{Version: "v0.1.0", Dir: "/previous", Flavor: "/harness/cluster-template-previous.yaml"}
	out, err := AddProviderVersion([]byte(expandedConfig), "ssh", "InfrastructureProvider", previous.Source("v1beta2"))
	if err != nil {
		t.Fatal(err)
	}
	config := decodeConfig(t, out)

	if config.ManagementClusterName != "capssh-e2e" || config.Variables["KUBERNETES_VERSION"] != "v1.36.3" ||
		config.Variables["CLUSTER_TOPOLOGY"] != "true" || strings.Join(config.Intervals["default/wait-cluster"], " ") != "10m 10s" {
		t.Errorf("the rest of the config changed:\n%s", out)
	}
	if len(config.Providers) != 2 || len(config.Providers[0].Versions) != 1 {
		t.Errorf("other providers changed:\n%s", out)
	}
	ssh := sshProvider(t, config)
	if len(ssh.Files) != 1 || ssh.Files[0].SourcePath != "/flavors/cluster-template.yaml" {
		t.Errorf("the provider-level files changed: %+v", ssh.Files)
	}
	if len(ssh.Versions) != 2 || ssh.Versions[0].Name != "v0.2.0" {
		t.Fatalf("want v0.2.0 then v0.1.0, got %+v", ssh.Versions)
	}
	added := ssh.Versions[1]
	if added.Name != "v0.1.0" || added.Type != clusterctl.URLSource || added.Contract != "v1beta2" ||
		added.Value != "/previous/infrastructure-components.yaml" {
		t.Errorf("added version: %+v", added)
	}
	want := []clusterctl.Files{
		{SourcePath: "/previous/metadata.yaml", TargetName: "metadata.yaml"},
		{SourcePath: "/harness/cluster-template-previous.yaml", TargetName: "cluster-template-previous.yaml"},
	}
	if len(added.Files) != len(want) || added.Files[0] != want[0] || added.Files[1] != want[1] {
		t.Errorf("added version's files: got %+v, want %+v", added.Files, want)
	}
	if got := ProviderVersionFile(config, "ssh", "v0.1.0", "cluster-template-previous.yaml"); got != want[1].SourcePath {
		t.Errorf("ProviderVersionFile(v0.1.0, cluster-template-previous.yaml) = %q", got)
	}
	if got := ProviderVersionFile(config, "ssh", "v0.2.0", "cluster-template-previous.yaml"); got != "" {
		t.Errorf("the current version publishes the previous flavor: %q", got)
	}
	if got := ProviderVersionFile(config, "ssh", "v0.2.0", "metadata.yaml"); got != "/release/metadata.yaml" {
		t.Errorf("ProviderVersionFile(v0.2.0, metadata.yaml) = %q", got)
	}
}

func TestAddProviderVersionRefuses(t *testing.T) {
	skipInE2ERun(t)
	source := PreviousRelease{Version: "v0.1.0", Dir: "/previous"}.Source("v1beta2")
	if _, err := AddProviderVersion([]byte(expandedConfig), "metal", "InfrastructureProvider", source); err == nil {
		t.Error("an unknown provider was accepted")
	}
	if _, err := AddProviderVersion([]byte(expandedConfig), "ssh", "CoreProvider", source); err == nil {
		t.Error("a provider of another type was accepted")
	}
	source.Name = "v0.2.0"
	if _, err := AddProviderVersion([]byte(expandedConfig), "ssh", "InfrastructureProvider", source); err == nil {
		t.Error("a version the provider already has was accepted")
	}
}

func TestReleaseContract(t *testing.T) {
	skipInE2ERun(t)
	path := filepath.Join(t.TempDir(), "metadata.yaml")
	if err := os.WriteFile(path, []byte(twoSeriesMetadata), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"v0.1.0", "v0.2.3"} {
		if contract, err := ReleaseContract(path, v); err != nil || contract != "v1beta2" {
			t.Errorf("ReleaseContract(%s) = %q, %v", v, contract, err)
		}
	}
	for _, v := range []string{"v0.3.0", "v1.1.0", "not-a-version"} {
		if _, err := ReleaseContract(path, v); err == nil {
			t.Errorf("ReleaseContract(%s): no error", v)
		}
	}
}

func TestAddPreviousRelease(t *testing.T) {
	skipInE2ERun(t)
	dir := t.TempDir()
	release := filepath.Join(dir, "v0.1.0")
	if err := os.MkdirAll(release, 0o750); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		filepath.Join(release, "infrastructure-components.yaml"): "kind: Namespace\n",
		filepath.Join(release, "metadata.yaml"):                  twoSeriesMetadata,
		filepath.Join(dir, "cluster-template-previous.yaml"):     "kind: Cluster\n",
		filepath.Join(dir, "e2e-config.yaml"):                    expandedConfig,
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	configPath := filepath.Join(dir, "e2e-config.yaml")
	previous := PreviousRelease{Version: "v0.1.0", Dir: release, Flavor: filepath.Join(dir, "cluster-template-previous.yaml")}
	if err := AddPreviousRelease(configPath, "ssh", previous); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(configPath) //nolint:gosec // the test's own file
	if err != nil {
		t.Fatal(err)
	}
	versions := sshProvider(t, decodeConfig(t, data)).Versions
	if len(versions) != 2 || versions[1].Name != "v0.1.0" || versions[1].Contract != "v1beta2" {
		t.Errorf("versions after AddPreviousRelease: %+v", versions)
	}

	missing := previous
	missing.Flavor = filepath.Join(dir, "absent.yaml")
	if err := AddPreviousRelease(configPath, "ssh", missing); err == nil {
		t.Error("a missing flavor file was accepted")
	}
	uncovered := previous
	uncovered.Version = "v0.5.0"
	if err := AddPreviousRelease(configPath, "ssh", uncovered); err == nil {
		t.Error("a version outside metadata.yaml's release series was accepted")
	}
}

func TestPreviousReleaseFromEnv(t *testing.T) {
	skipInE2ERun(t)
	set := func(version, dir, flavor string) {
		t.Setenv(PreviousVersionVariable, version)
		t.Setenv(PreviousReleaseDirVariable, dir)
		t.Setenv(PreviousFlavorVariable, flavor)
	}

	set("", "", "")
	if _, ok, err := PreviousReleaseFromEnv(); ok || err != nil {
		t.Errorf("unset: ok=%v err=%v, want false, nil", ok, err)
	}
	for _, partial := range [][3]string{{"v0.1.0", "", ""}, {"", "/previous", ""}, {"", "", "/flavor.yaml"}} {
		set(partial[0], partial[1], partial[2])
		if _, _, err := PreviousReleaseFromEnv(); err == nil {
			t.Errorf("%v: no error", partial)
		}
	}
	set("v0.1.0", "/previous", "/harness/cluster-template-previous.yaml")
	release, ok, err := PreviousReleaseFromEnv()
	if !ok || err != nil || release != (PreviousRelease{Version: "v0.1.0", Dir: "/previous", Flavor: "/harness/cluster-template-previous.yaml"}) {
		t.Errorf("set: %+v, %v, %v", release, ok, err)
	}
}
