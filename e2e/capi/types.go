package capie2e

// The few capssh API fields this module reads, with the JSON names of src/api/v1alpha1/*.rs
// (serde camelCase). Only what the hosts hook and the log collector need; the Rust types are the
// reference.

import (
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and version of every capssh kind.
const (
	infraGroup   = "infrastructure.cluster.x-k8s.io"
	infraVersion = "v1alpha1"

	// credentialsLabel must be "true" on a Secret before capssh (and this module) uses it as an
	// SSHHost's credentials (src/api/v1alpha1/sshhost.rs CREDENTIALS_LABEL).
	credentialsLabel = "infrastructure.cluster.x-k8s.io/capssh-credentials"

	defaultSSHPort       = 22
	defaultSSHUser       = "root"
	defaultPrivateKeyKey = "ssh-privatekey"
)

var (
	sshHostGVK    = schema.GroupVersionKind{Group: infraGroup, Version: infraVersion, Kind: "SSHHost"}
	sshMachineGVK = schema.GroupVersionKind{Group: infraGroup, Version: infraVersion, Kind: "SSHMachine"}
)

// sshHostSpec is SSHHost.spec.
type sshHostSpec struct {
	Address string        `json:"address"`
	Port    int32         `json:"port,omitempty"`
	User    string        `json:"user,omitempty"`
	Auth    sshAuth       `json:"auth"`
	HostKey hostKeyPolicy `json:"hostKey"`
	Bastion *bastion      `json:"bastion,omitempty"`
}

// sshHostStatus is the part of SSHHost.status used here.
type sshHostStatus struct {
	ObservedHostKeyFingerprint string `json:"observedHostKeyFingerprint,omitempty"`
}

// sshAuth holds exactly one of a private key or a password reference.
type sshAuth struct {
	PrivateKeySecretRef *privateKeyRef `json:"privateKeySecretRef,omitempty"`
	PasswordSecretRef   *secretKeyRef  `json:"passwordSecretRef,omitempty"`
}

type privateKeyRef struct {
	Name          string  `json:"name"`
	Key           string  `json:"key,omitempty"`
	PassphraseKey *string `json:"passphraseKey,omitempty"`
}

type secretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// hostKeyPolicy pins keys: OpenSSH public keys, known_hosts lines or SHA256: fingerprints.
type hostKeyPolicy struct {
	PublicKeys      []string `json:"publicKeys,omitempty"`
	TrustOnFirstUse bool     `json:"trustOnFirstUse,omitempty"`
}

type bastion struct {
	Address string        `json:"address"`
	Port    int32         `json:"port,omitempty"`
	User    string        `json:"user,omitempty"`
	Auth    sshAuth       `json:"auth"`
	HostKey hostKeyPolicy `json:"hostKey"`
}

// sshMachineSpec is the part of SSHMachine.spec used here: the claimed host is spec.hostRef
// (SSHMachine.status carries no host name).
type sshMachineSpec struct {
	HostRef *struct {
		Name string `json:"name"`
	} `json:"hostRef,omitempty"`
}

// decodeField converts obj[field...] (e.g. "spec") into out through JSON.
func decodeField(obj *unstructured.Unstructured, out any, fields ...string) error {
	value, found, err := unstructured.NestedFieldNoCopy(obj.Object, fields...)
	if err != nil {
		return err
	}
	if !found {
		return nil
	}
	data, err := json.Marshal(value)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s/%s: decoding %v: %w", obj.GetKind(), obj.GetNamespace(), obj.GetName(), fields, err)
	}
	return nil
}

// withDefaults applies the CRD's defaults (port 22, user root, key ssh-privatekey), in case an
// object was stored without them.
func (s sshHostSpec) withDefaults() sshHostSpec {
	if s.Port == 0 {
		s.Port = defaultSSHPort
	}
	if s.User == "" {
		s.User = defaultSSHUser
	}
	s.Auth = s.Auth.withDefaults()
	if s.Bastion != nil {
		b := *s.Bastion
		if b.Port == 0 {
			b.Port = defaultSSHPort
		}
		if b.User == "" {
			b.User = defaultSSHUser
		}
		b.Auth = b.Auth.withDefaults()
		s.Bastion = &b
	}
	return s
}

func (a sshAuth) withDefaults() sshAuth {
	if a.PrivateKeySecretRef != nil && a.PrivateKeySecretRef.Key == "" {
		ref := *a.PrivateKeySecretRef
		ref.Key = defaultPrivateKeyKey
		a.PrivateKeySecretRef = &ref
	}
	return a
}
