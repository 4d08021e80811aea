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
