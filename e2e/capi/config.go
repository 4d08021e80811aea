package capie2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/version"
	"sigs.k8s.io/yaml"

	"sigs.k8s.io/cluster-api/test/framework/clusterctl"
)

// ConfigDirVariable names the folder of the e2e config file; set from -e2e.config when the
// environment does not set it, so that the config can name its data files as
// ${CAPSSH_E2E_CONFIG_DIR}/../data/...
const ConfigDirVariable = "CAPSSH_E2E_CONFIG_DIR"

// FlavorsDirVariable names the folder of the flavors the config publishes (cluster-template*.yaml)
// and ClusterClassDirVariable the folder of clusterclass-ssh.yaml. A harness that adapts them to
// its hosts (e2e/src/capi_specs.rs) points these at its copies.
const (
	FlavorsDirVariable      = "CAPSSH_E2E_FLAVORS_DIR"
	ClusterClassDirVariable = "CAPSSH_E2E_CLUSTERCLASS_DIR"
)

// folderDefaults are the folders the config's variables name when the environment leaves them
// unset, relative to the config file's folder: this module's data and the repository's templates.
var folderDefaults = [...]struct{ variable, relative string }{
	{ConfigDirVariable, "."},
	{FlavorsDirVariable, "../data/infrastructure-ssh"},
	{ClusterClassDirVariable, "../../../templates"},
}

// capsshVariable is a reference the config may make to the environment. Other ${...} are left
// alone: clusterctl substitutes them later, in templates and components.
var capsshVariable = regexp.MustCompile(`\$\{(CAPSSH_[A-Z0-9_]+)\}`)

// ExpandConfig writes a copy of the e2e config at path into outDir with every ${CAPSSH_*}
// replaced by its environment value, and returns the copy's path. The framework reads provider
// paths literally (no environment substitution) and resolves relative ones against the config's
// folder, which is the copy's: every path in the config must therefore be absolute once
// expanded (${CAPSSH_E2E_CONFIG_DIR}/..., ${CAPSSH_RELEASE_DIR}/...). The variables of
// folderDefaults get their default folders first when the environment does not set them.
func ExpandConfig(path, outDir string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	for _, folder := range folderDefaults {
		if _, ok := os.LookupEnv(folder.variable); ok {
			continue
		}
		if err := os.Setenv(folder.variable, filepath.Join(filepath.Dir(abs), folder.relative)); err != nil {
			return "", err
		}
	}
	data, err := os.ReadFile(abs) //nolint:gosec // the config named by -e2e.config
	if err != nil {
		return "", err
	}
	missing := map[string]bool{}
	expanded := capsshVariable.ReplaceAllFunc(data, func(ref []byte) []byte {
		name := string(capsshVariable.FindSubmatch(ref)[1])
		value, ok := os.LookupEnv(name)
		if !ok || value == "" {
			missing[name] = true
		}
		return []byte(value)
	})
	if len(missing) > 0 {
		names := make([]string, 0, len(missing))
		for name := range missing {
			names = append(names, name)
		}
		sort.Strings(names)
		return "", fmt.Errorf("%s uses environment variables that are not set: %s", path, strings.Join(names, ", "))
	}
	if err := os.MkdirAll(outDir, 0o750); err != nil {
		return "", err
	}
	out := filepath.Join(outDir, "e2e-config.yaml")
	if err := os.WriteFile(out, expanded, 0o600); err != nil {
		return "", err
	}
	return out, nil
}

// ClusterctlSettingsVariable names a YAML file whose top-level keys the suite writes into the
// clusterctl config it generates (-capssh.clusterctl-settings). e2e/src/capi_specs.rs puts there
// the `images` and `cert-manager` settings of the installed suite's own clusterctl config, so that
// a `clusterctl init` run by a spec (SelfHosted's, on the cluster it made) takes the images from
// the sandbox's registry and cert-manager from a local file.
const ClusterctlSettingsVariable = "CAPSSH_E2E_CLUSTERCTL_SETTINGS"

// MergeClusterctlSettings writes every top-level key of the YAML file settings into the
// clusterctl config file config, replacing the value there, and returns the keys (sorted). It
// refuses `providers`: they must stay those of the suite's repository.
func MergeClusterctlSettings(config, settings string) ([]string, error) {
	read := func(path string) (map[string]interface{}, error) {
		data, err := os.ReadFile(path) //nolint:gosec // the suite's clusterctl config, or the settings file the operator names
		if err != nil {
			return nil, err
		}
		values := map[string]interface{}{}
		if err := yaml.Unmarshal(data, &values); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return values, nil
	}
	values, err := read(config)
	if err != nil {
		return nil, err
	}
	extra, err := read(settings)
	if err != nil {
		return nil, err
	}
	if len(extra) == 0 {
		return nil, fmt.Errorf("%s holds no settings", settings)
	}
	keys := make([]string, 0, len(extra))
	for key, value := range extra {
		if key == "providers" {
			return nil, fmt.Errorf("%s sets providers: the suite's clusterctl config keeps its own", settings)
		}
		values[key] = value
		keys = append(keys, key)
	}
	sort.Strings(keys)
	data, err := yaml.Marshal(values)
	if err != nil {
		return nil, err
	}
	return keys, os.WriteFile(config, data, 0o600)
}

// sourcesPrefix starts the line that e2e/capi/data/generate.sh writes at the top of each file it
// generates: `<path>=<sha256>` for every input, paths relative to the file's folder.
const sourcesPrefix = "# capssh-e2e-sources:"

// requireGenerated checks a data file the suite is about to use: it exists, holds more than
// comments, and, when generate.sh wrote it, every input it was made from still has the
// recorded SHA-256 (a template edited since makes it stale).
func requireGenerated(path string) error {
	data, err := os.ReadFile(path) //nolint:gosec // a data file named by the e2e config
	if err != nil {
		return err
	}
	var sources string
	content := false
	scanner := bufio.NewScanner(bytes.NewReader(data))
	scanner.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if rest, ok := strings.CutPrefix(line, sourcesPrefix); ok && sources == "" {
			sources = rest
		}
		if line != "" && line != "---" && !strings.HasPrefix(line, "#") {
			content = true
			break
		}
	}
	if err := scanner.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if !content {
		return fmt.Errorf("%s holds no YAML (only comments): run e2e/capi/data/generate.sh", path)
	}
	for _, entry := range strings.Fields(sources) {
		rel, want, ok := strings.Cut(entry, "=")
		if !ok {
			return fmt.Errorf("%s: malformed %q in its sources line", path, entry)
		}
		input := filepath.Join(filepath.Dir(path), rel)
		got, err := fileSHA256(input)
		if err != nil {
			return fmt.Errorf("%s was generated from %s, which cannot be read (%w): run e2e/capi/data/generate.sh", path, input, err)
		}
		if got != want {
			return fmt.Errorf("%s is stale: %s changed since it was generated; run e2e/capi/data/generate.sh", path, input)
		}
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	data, err := os.ReadFile(path) //nolint:gosec // an input named by a generated data file
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

// ProviderFile returns the source path of the file the e2e config publishes as targetName for
// the infrastructure provider (e.g. cluster-template-topology.yaml), or "" when it names none.
func ProviderFile(config *clusterctl.E2EConfig, provider, targetName string) string {
	for _, p := range config.Providers {
		if p.Name != provider {
			continue
		}
		for _, f := range p.Files {
			if f.TargetName == targetName {
				return f.SourcePath
			}
		}
		for _, v := range p.Versions {
			for _, f := range v.Files {
				if f.TargetName == targetName {
					return f.SourcePath
				}
			}
		}
	}
	return ""
}

// TemplateFile is the name clusterctl gives a flavor's cluster template.
func TemplateFile(flavor string) string {
	if flavor == "" {
		return "cluster-template.yaml"
	}
	return "cluster-template-" + flavor + ".yaml"
}

// The previous capssh release, for ClusterctlUpgrade (clusterctl_upgrade_test.go). The harness
// (e2e/src/capi_specs.rs) sets them only when it selects that spec. config/capssh.yaml names none
// of them (ExpandConfig fails on an unset ${CAPSSH_*}): setUpOnce adds the version to the expanded
// config instead (AddPreviousRelease), before anything reads it.
const (
	// PreviousVersionVariable is the previous release's version, e.g. v0.1.0.
	PreviousVersionVariable = "CAPSSH_PREVIOUS_VERSION"
	// PreviousReleaseDirVariable is the absolute folder of that release's
	// infrastructure-components.yaml and metadata.yaml.
	PreviousReleaseDirVariable = "CAPSSH_PREVIOUS_RELEASE_DIR"
	// PreviousFlavorVariable is the absolute path of a cluster template in that release's API,
	// published as flavor PreviousFlavor of that version only.
	PreviousFlavorVariable = "CAPSSH_E2E_PREVIOUS_FLAVOR"
	// OldClusterctlURLVariable is the http(s) URL of the clusterctl binary that installs the
	// previous release (-capssh.old-clusterctl-url); {OS} and {ARCH} are filled in by the spec.
	OldClusterctlURLVariable = "CAPSSH_E2E_OLD_CLUSTERCTL_URL"
)

// PreviousFlavor is the flavor of the previous release the spec's old clusterctl makes its
// workload cluster from (cluster-template-previous.yaml).
const PreviousFlavor = "previous"

// PreviousRelease is an older release of the infrastructure provider to publish next to the
// current one.
type PreviousRelease struct {
	// Version, e.g. v0.1.0.
	Version string
	// Dir holds infrastructure-components.yaml and metadata.yaml.
	Dir string
	// Flavor is the source of TemplateFile(PreviousFlavor); empty: none.
	Flavor string
}

// PreviousReleaseFromEnv reads the previous release from the environment. ok is false when
// neither PreviousVersionVariable nor PreviousReleaseDirVariable is set (every spec but
// ClusterctlUpgrade runs without them); one without the other is an error. Paths are made
// absolute (the framework reads them literally).
func PreviousReleaseFromEnv() (release PreviousRelease, ok bool, err error) {
	release = PreviousRelease{
		Version: os.Getenv(PreviousVersionVariable),
		Dir:     os.Getenv(PreviousReleaseDirVariable),
		Flavor:  os.Getenv(PreviousFlavorVariable),
	}
	switch {
	case release.Version == "" && release.Dir == "":
		if release.Flavor != "" {
			return release, false, fmt.Errorf("%s is set but %s and %s are not", PreviousFlavorVariable, PreviousVersionVariable, PreviousReleaseDirVariable)
		}
		return release, false, nil
	case release.Version == "":
		return release, false, fmt.Errorf("%s is set but %s is not", PreviousReleaseDirVariable, PreviousVersionVariable)
	case release.Dir == "":
		return release, false, fmt.Errorf("%s is set but %s is not", PreviousVersionVariable, PreviousReleaseDirVariable)
	}
	if release.Dir, err = filepath.Abs(release.Dir); err != nil {
		return release, false, err
	}
	if release.Flavor != "" {
		if release.Flavor, err = filepath.Abs(release.Flavor); err != nil {
			return release, false, err
		}
	}
	return release, true, nil
}

// Source is the release as a version of an e2e config provider: its components, its
// metadata.yaml and, when set, its flavor as version-level files.
func (r PreviousRelease) Source(contract string) clusterctl.ProviderVersionSource {
	files := []clusterctl.Files{{SourcePath: filepath.Join(r.Dir, "metadata.yaml"), TargetName: "metadata.yaml"}}
	if r.Flavor != "" {
		files = append(files, clusterctl.Files{SourcePath: r.Flavor, TargetName: TemplateFile(PreviousFlavor)})
	}
	return clusterctl.ProviderVersionSource{
		Name:     r.Version,
		Type:     clusterctl.URLSource,
		Value:    filepath.Join(r.Dir, "infrastructure-components.yaml"),
		Contract: contract,
		Files:    files,
	}
}

// AddPreviousRelease adds the previous release as a version of the infrastructure provider
// named provider to the (expanded) e2e config file at configPath, in place. The contract is the
// one the release's own metadata.yaml gives its release series.
//
// What clusterctl.CreateRepository then writes into <repository>/infrastructure-<provider>/<version>/
// (framework/clusterctl/repository.go): components.yaml (from infrastructure-components.yaml),
// then every provider-level file (config/capssh.yaml's `files`: the current release's flavors and
// clusterclass-ssh.yaml, copied into every version's folder), then the version-level files:
// metadata.yaml from r.Dir and cluster-template-previous.yaml. So the previous version's folder
// also holds the current flavors (in the current API; the spec does not use them there), and
// cluster-template-previous.yaml is in that folder only. Every copied file goes through the
// repository's file transformations too (`data: ${CNI_RESOURCES}` becomes the CNI manifests).
func AddPreviousRelease(configPath, provider string, r PreviousRelease) error {
	for _, file := range []string{filepath.Join(r.Dir, "infrastructure-components.yaml"), filepath.Join(r.Dir, "metadata.yaml"), r.Flavor} {
		if file == "" {
			continue
		}
		if _, err := os.Stat(file); err != nil {
			return fmt.Errorf("previous release %s: %w", r.Version, err)
		}
	}
	contract, err := ReleaseContract(filepath.Join(r.Dir, "metadata.yaml"), r.Version)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(configPath) //nolint:gosec // the expanded e2e config the suite wrote
	if err != nil {
		return err
	}
	data, err = AddProviderVersion(data, provider, "InfrastructureProvider", r.Source(contract))
	if err != nil {
		return fmt.Errorf("%s: %w", configPath, err)
	}
	return os.WriteFile(configPath, data, 0o600)
}

// AddProviderVersion returns the e2e config YAML data with source appended to the versions of
// the provider of that name and type. Everything else in the config is kept (comments are not).
// The provider must exist and must not have that version already.
func AddProviderVersion(data []byte, provider, providerType string, source clusterctl.ProviderVersionSource) ([]byte, error) {
	var config map[string]interface{}
	if err := yaml.Unmarshal(data, &config); err != nil {
		return nil, err
	}
	providers, _ := config["providers"].([]interface{})
	var target map[string]interface{}
	for _, p := range providers {
		entry, _ := p.(map[string]interface{})
		if entry != nil && entry["name"] == provider && entry["type"] == providerType {
			target = entry
			break
		}
	}
	if target == nil {
		return nil, fmt.Errorf("no %s %q in providers", providerType, provider)
	}
	versions, _ := target["versions"].([]interface{})
	for _, v := range versions {
		if entry, _ := v.(map[string]interface{}); entry != nil && entry["name"] == source.Name {
			return nil, fmt.Errorf("%s %q already has version %s", providerType, provider, source.Name)
		}
	}
	// Through JSON, so that the framework's own field names are used.
	raw, err := yaml.Marshal(source)
	if err != nil {
		return nil, err
	}
	var entry map[string]interface{}
	if err := yaml.Unmarshal(raw, &entry); err != nil {
		return nil, err
	}
	target["versions"] = append(versions, entry)
	return yaml.Marshal(config)
}

// providerMetadata is the part of a clusterctl metadata.yaml (clusterctl.cluster.x-k8s.io
// Metadata) that says which contract each release series implements.
type providerMetadata struct {
	ReleaseSeries []struct {
		Major    uint   `json:"major"`
		Minor    uint   `json:"minor"`
		Contract string `json:"contract"`
	} `json:"releaseSeries"`
}

// ReleaseContract returns the contract the metadata.yaml at path gives the release series of
// release (e.g. v0.1.0 -> series 0.1), or an error when no series covers it. clusterctl refuses
// such a version: `clusterctl upgrade` reads the newest version's metadata.yaml and needs a series
// there for the installed version and for every newer one.
func ReleaseContract(path, release string) (string, error) {
	v, err := version.ParseSemantic(release)
	if err != nil {
		return "", fmt.Errorf("version %q: %w", release, err)
	}
	data, err := os.ReadFile(path) //nolint:gosec // a provider's metadata.yaml named by the e2e config or the environment
	if err != nil {
		return "", err
	}
	var metadata providerMetadata
	if err := yaml.Unmarshal(data, &metadata); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	for _, series := range metadata.ReleaseSeries {
		if series.Major == v.Major() && series.Minor == v.Minor() {
			if series.Contract == "" {
				return "", fmt.Errorf("%s: release series %d.%d names no contract", path, series.Major, series.Minor)
			}
			return series.Contract, nil
		}
	}
	return "", fmt.Errorf("%s has no release series %d.%d (for %s)", path, v.Major(), v.Minor(), release)
}

// ProviderVersionFile returns the source path of the file the e2e config publishes as
// targetName in the given version of the provider (version-level files only), or "".
func ProviderVersionFile(config *clusterctl.E2EConfig, provider, versionName, targetName string) string {
	for _, p := range config.Providers {
		if p.Name != provider {
			continue
		}
		for _, v := range p.Versions {
			if v.Name != versionName {
				continue
			}
			for _, f := range v.Files {
				if f.TargetName == targetName {
					return f.SourcePath
				}
			}
		}
	}
	return ""
}
