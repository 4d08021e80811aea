package capie2e

// An SSH connection to an SSHHost, as capssh makes it: the host's own credentials Secret (which
// must carry the capssh credentials label), its pinned host key, an optional jump host, and
// `sudo -n` for a login user other than root. Secret material never appears in errors or logs:
// errors name Secrets and keys, never their values.

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	sshDialTimeout = 30 * time.Second
	// sshCommandTimeout bounds one command (a journal can be long, a dead host must not hang the suite).
	sshCommandTimeout = 3 * time.Minute
)

// hostTarget is everything needed to reach one SSHHost.
type hostTarget struct {
	// name is namespace/name of the SSHHost, for messages.
	name string
	spec sshHostSpec
	// observedFingerprint is SSHHost.status.observedHostKeyFingerprint, the fallback pin of a
	// trust-on-first-use host that capssh has not pinned in spec yet.
	observedFingerprint string
}

// secretGetter reads a Secret of the SSHHost's namespace.
type secretGetter func(ctx context.Context, name string) (*corev1.Secret, error)

// clientSecretGetter reads Secrets in namespace through a controller-runtime client.
func clientSecretGetter(c client.Client, namespace string) secretGetter {
	return func(ctx context.Context, name string) (*corev1.Secret, error) {
		secret := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret); err != nil {
			return nil, fmt.Errorf("reading Secret %s/%s: %w", namespace, name, err)
		}
		return secret, nil
	}
}

// hostConn is an open SSH connection to a host (and its jump host, if any).
type hostConn struct {
	client  *ssh.Client
	bastion *ssh.Client
	user    string
}

// Close closes the connection and the jump host's.
func (c *hostConn) Close() {
	_ = c.client.Close()
	if c.bastion != nil {
		_ = c.bastion.Close()
	}
}

// dialHost connects to t, through its bastion when it has one.
func dialHost(ctx context.Context, t hostTarget, secrets secretGetter) (*hostConn, error) {
	spec := t.spec.withDefaults()
	addr := net.JoinHostPort(spec.Address, strconv.Itoa(int(spec.Port)))

	auth, err := authMethods(ctx, spec.Auth, secrets, t.name)
	if err != nil {
		return nil, err
	}
	hostKeys, err := hostKeyCallback(spec.HostKey, t.observedFingerprint, t.name)
	if err != nil {
		return nil, err
	}
	config := &ssh.ClientConfig{User: spec.User, Auth: auth, HostKeyCallback: hostKeys, Timeout: sshDialTimeout}

	if spec.Bastion == nil {
		dialer := net.Dialer{Timeout: sshDialTimeout}
		conn, err := dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("SSHHost %s: connecting to %s: %w", t.name, addr, err)
		}
		c, err := handshake(conn, addr, config)
		if err != nil {
			return nil, fmt.Errorf("SSHHost %s: SSH handshake with %s: %w", t.name, addr, err)
		}
		return &hostConn{client: c, user: spec.User}, nil
	}

	b := spec.Bastion
	bastionName := t.name + " (jump host)"
	bastionAddr := net.JoinHostPort(b.Address, strconv.Itoa(int(b.Port)))
	bastionAuth, err := authMethods(ctx, b.Auth, secrets, bastionName)
	if err != nil {
		return nil, err
	}
	// capssh records only the host's own key in status: a jump host must be pinned in spec.
	bastionKeys, err := hostKeyCallback(b.HostKey, "", bastionName)
	if err != nil {
		return nil, err
	}
	dialer := net.Dialer{Timeout: sshDialTimeout}
	bastionConn, err := dialer.DialContext(ctx, "tcp", bastionAddr)
	if err != nil {
		return nil, fmt.Errorf("SSHHost %s: connecting to %s: %w", bastionName, bastionAddr, err)
	}
	bastionClient, err := handshake(bastionConn, bastionAddr,
		&ssh.ClientConfig{User: b.User, Auth: bastionAuth, HostKeyCallback: bastionKeys, Timeout: sshDialTimeout})
	if err != nil {
		return nil, fmt.Errorf("SSHHost %s: SSH handshake with %s: %w", bastionName, bastionAddr, err)
	}
	conn, err := bastionClient.DialContext(ctx, "tcp", addr)
	if err != nil {
		_ = bastionClient.Close()
		return nil, fmt.Errorf("SSHHost %s: connecting to %s through the jump host: %w", t.name, addr, err)
	}
	c, err := handshake(conn, addr, config)
	if err != nil {
		_ = bastionClient.Close()
		return nil, fmt.Errorf("SSHHost %s: SSH handshake with %s: %w", t.name, addr, err)
	}
	return &hostConn{client: c, bastion: bastionClient, user: spec.User}, nil
}

// handshake runs the SSH handshake on conn, bounded by the config's timeout.
func handshake(conn net.Conn, addr string, config *ssh.ClientConfig) (*ssh.Client, error) {
	_ = conn.SetDeadline(time.Now().Add(config.Timeout))
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, config)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// authMethods reads the credentials an SSHAuth names. The Secret must carry the credentials
// label, as capssh requires.
func authMethods(ctx context.Context, auth sshAuth, secrets secretGetter, who string) ([]ssh.AuthMethod, error) {
	value := func(name, key string) ([]byte, error) {
		secret, err := secrets(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("SSHHost %s: %w", who, err)
		}
		if secret.Labels[credentialsLabel] != "true" {
			return nil, fmt.Errorf("SSHHost %s: Secret %s lacks the label %s=\"true\" (capssh refuses it too)", who, name, credentialsLabel)
		}
		data, ok := secret.Data[key]
		if !ok || len(data) == 0 {
			return nil, fmt.Errorf("SSHHost %s: Secret %s has no key %q", who, name, key)
		}
		return data, nil
	}
	switch {
	case auth.PrivateKeySecretRef != nil && auth.PasswordSecretRef == nil:
		ref := auth.PrivateKeySecretRef
		pem, err := value(ref.Name, ref.Key)
		if err != nil {
			return nil, err
		}
		var signer ssh.Signer
		if ref.PassphraseKey != nil && *ref.PassphraseKey != "" {
			passphrase, err := value(ref.Name, *ref.PassphraseKey)
			if err != nil {
				return nil, err
			}
			signer, err = ssh.ParsePrivateKeyWithPassphrase(pem, passphrase)
			if err != nil {
				return nil, fmt.Errorf("SSHHost %s: the private key in Secret %s (key %q) does not parse with its passphrase", who, ref.Name, ref.Key)
			}
		} else {
			signer, err = ssh.ParsePrivateKey(pem)
			if err != nil {
				// The parser's error is not wrapped: keep anything derived from the key out of messages.
				return nil, fmt.Errorf("SSHHost %s: the private key in Secret %s (key %q) does not parse", who, ref.Name, ref.Key)
			}
		}
		return []ssh.AuthMethod{ssh.PublicKeys(signer)}, nil
	case auth.PasswordSecretRef != nil && auth.PrivateKeySecretRef == nil:
		ref := auth.PasswordSecretRef
		password, err := value(ref.Name, ref.Key)
		if err != nil {
			return nil, err
		}
		pw := strings.TrimRight(string(password), "\r\n")
		answer := func(_, _ string, questions []string, _ []bool) ([]string, error) {
			answers := make([]string, len(questions))
			for i := range answers {
				answers[i] = pw
			}
			return answers, nil
		}
		return []ssh.AuthMethod{ssh.Password(pw), ssh.KeyboardInteractive(answer)}, nil
	default:
		return nil, fmt.Errorf("SSHHost %s: auth must set exactly one of privateKeySecretRef and passwordSecretRef", who)
	}
}

// hostKeyCallback accepts only a pinned key: an OpenSSH public key line, a known_hosts line or a
// SHA256: fingerprint; with trustOnFirstUse and nothing pinned yet, the fingerprint capssh
// observed (status). Never any key.
func hostKeyCallback(policy hostKeyPolicy, observedFingerprint, who string) (ssh.HostKeyCallback, error) {
	var fingerprints []string
	var keys [][]byte
	for _, pin := range policy.PublicKeys {
		pin = strings.TrimSpace(pin)
		if strings.HasPrefix(pin, "SHA256:") {
			fingerprints = append(fingerprints, pin)
			continue
		}
		key, err := pinnedKey(pin)
		if err != nil {
			return nil, fmt.Errorf("SSHHost %s: hostKey.publicKeys: %w", who, err)
		}
		keys = append(keys, key)
	}
	if len(fingerprints) == 0 && len(keys) == 0 {
		if !policy.TrustOnFirstUse || observedFingerprint == "" {
			return nil, fmt.Errorf("SSHHost %s: no host key pinned yet (hostKey.publicKeys is empty and capssh has not observed one): refusing to connect", who)
		}
		fingerprints = append(fingerprints, observedFingerprint)
	}
	return func(_ string, _ net.Addr, key ssh.PublicKey) error {
		seen := ssh.FingerprintSHA256(key)
		for _, fp := range fingerprints {
			if strings.TrimRight(fp, "=") == seen {
				return nil
			}
		}
		for _, k := range keys {
			if bytes.Equal(k, key.Marshal()) {
				return nil
			}
		}
		return fmt.Errorf("host key %s is not pinned for SSHHost %s", seen, who)
	}, nil
}

// pinnedKey returns the wire-format key of an OpenSSH public key line (`type base64 [comment]`)
// or a known_hosts line (`patterns type base64 [comment]`).
func pinnedKey(line string) ([]byte, error) {
	if strings.HasPrefix(line, "@") {
		return nil, errors.New("a known_hosts line with a marker is not a pin")
	}
	fields := strings.Fields(line)
	for i := 0; i+1 < len(fields) && i < 2; i++ {
		t := fields[i]
		if strings.HasPrefix(t, "ssh-") || strings.HasPrefix(t, "ecdsa-") || strings.HasPrefix(t, "sk-") {
			key, err := base64.StdEncoding.DecodeString(fields[i+1])
			if err != nil {
				return nil, fmt.Errorf("%q is not base64", fields[i+1])
			}
			if _, err := ssh.ParsePublicKey(key); err != nil {
				return nil, fmt.Errorf("a %s key does not parse: %w", t, err)
			}
			return key, nil
		}
	}
	return nil, errors.New("not an OpenSSH public key, a known_hosts line or a SHA256: fingerprint")
}

// run runs a shell command on the host (through `sudo -n` for a user other than root), writing
// its stdout to stdout and its stderr to stderr; it is bounded by sshCommandTimeout.
func (c *hostConn) run(ctx context.Context, command string, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, sshCommandTimeout)
	defer cancel()
	session, err := c.client.NewSession()
	if err != nil {
		return err
	}
	defer session.Close()
	session.Stdout = stdout
	session.Stderr = stderr
	if c.user != "root" {
		command = "sudo -n -- sh -c " + shellQuote(command)
	}
	done := make(chan error, 1)
	go func() { done <- session.Run(command) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		_ = session.Close()
		return fmt.Errorf("command did not finish in time: %w", ctx.Err())
	}
}

// output runs command and returns its stdout; stderr is kept for the error.
func (c *hostConn) output(ctx context.Context, command string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	if err := c.run(ctx, command, &stdout, &stderr); err != nil {
		return stdout.Bytes(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}
