// Generates capssh test fixtures with CABPK's own template code (cluster-api v1.14.2).
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"os"

	"k8s.io/utils/ptr"

	bootstrapv1 "sigs.k8s.io/cluster-api/api/bootstrap/kubeadm/v1beta2"
	"sigs.k8s.io/cluster-api/bootstrap/kubeadm/pkg/cloudinit"
	"sigs.k8s.io/cluster-api/bootstrap/kubeadm/pkg/ignition"
	"sigs.k8s.io/cluster-api/util/secret"
)

const clusterConfiguration = `apiServer:
  certSANs:
  - 198.18.0.10
apiVersion: kubeadm.k8s.io/v1beta4
clusterName: demo
controlPlaneEndpoint: 198.18.0.10:6443
kind: ClusterConfiguration
kubernetesVersion: v1.33.1
networking:
  podSubnet: 192.168.0.0/16
`

const initConfiguration = `apiVersion: kubeadm.k8s.io/v1beta4
bootstrapTokens:
- groups:
  - system:bootstrappers:kubeadm:default-node-token
  token: q8k3vx.x8f3kd9s0a2m1n4b
  ttl: 24h0m0s
  usages:
  - signing
  - authentication
kind: InitConfiguration
localAPIEndpoint: {}
nodeRegistration:
  imagePullPolicy: IfNotPresent
  kubeletExtraArgs:
  - name: provider-id
    value: '{{ ds.meta_data.provider_id }}'
  name: '{{ ds.meta_data.local_hostname }}'
  taints: null
`

const joinConfiguration = `apiVersion: kubeadm.k8s.io/v1beta4
discovery:
  bootstrapToken:
    apiServerEndpoint: 198.18.0.10:6443
    caCertHashes:
    - sha256:2b7d5a8f0f8c1b1e0c8b7a1d5a3f6e2c9d4b8a7e6f5d4c3b2a1908172635445f
    token: abcdef.0123456789abcdef
kind: JoinConfiguration
nodeRegistration:
  imagePullPolicy: IfNotPresent
  kubeletExtraArgs:
  - name: provider-id
    value: '{{ v1.provider_id }}'
  name: '{{ v1.local_hostname }}'
`

func gzb64(s string) string {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

func write(name string, data []byte) {
	if err := os.WriteFile(name, data, 0o644); err != nil {
		panic(err)
	}
}

func main() {
	out := os.Args[1]
	files := []bootstrapv1.File{
		{Path: "/etc/containerd/config.d/capssh.toml", Owner: "root:root", Permissions: "0644", Encoding: bootstrapv1.GzipBase64, Content: gzb64("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.10\"\n")},
		{Path: "/etc/modules-load.d/k8s.conf", Append: ptr.To(true), Content: "overlay\nbr_netfilter\n"},
		{Path: "/etc/capssh/motd", Owner: "nobody:nogroup", Permissions: "0600", Encoding: bootstrapv1.Base64, Content: base64.StdEncoding.EncodeToString([]byte("managed by capssh\n"))},
	}
	users := []bootstrapv1.User{{
		Name: "capi", Gecos: "Cluster API admin", Groups: "adm, sudo", Shell: "/bin/bash", LockPassword: ptr.To(false),
		Passwd: "$6$rounds=4096$saltsalt$Jh8lEgcHuuZ3bS0XrDBEZ3uQvSLRvCZxmA6WMwzyEw4c0Yh1ftvH3Qq2/a1gK8Lb4tXxYFz0dHnQOkjQDIZ3N1",
		Sudo: "ALL=(ALL) NOPASSWD:ALL", SSHAuthorizedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMbHlVd0bAqXxA1YHq1Yn7vM8lqRyJmKQ0cXbyF3aA9k capi@example"},
	}}
	pre := []string{"swapoff -a", "sed -i '/ swap / s/^/#/' /etc/fstab", "echo \"{{ ds.meta_data.local_ipv4 }} {{ ds.meta_data.hostname }}\" >> /etc/hosts"}
	post := []string{"echo done > /run/capssh-post"}

	cc := &bootstrapv1.ClusterConfiguration{EncryptionAlgorithm: bootstrapv1.EncryptionAlgorithmECDSAP256}
	certs := secret.NewCertificatesForInitialControlPlane(cc)
	if err := certs.Generate(); err != nil {
		panic(err)
	}
	init, err := cloudinit.NewInitControlPlane(&cloudinit.ControlPlaneInput{
		BaseUserData: cloudinit.BaseUserData{
			AdditionalFiles: files[:2], PreKubeadmCommands: pre, PostKubeadmCommands: post,
		},
		Certificates:         certs,
		ClusterConfiguration: clusterConfiguration,
		InitConfiguration:    initConfiguration,
	})
	if err != nil {
		panic(err)
	}
	write(out+"/init.yaml", init)

	join, err := cloudinit.NewNode(&cloudinit.NodeInput{
		BaseUserData: cloudinit.BaseUserData{
			AdditionalFiles: files, PreKubeadmCommands: pre, PostKubeadmCommands: post,
			BootCommands: []string{"mkdir -p /var/lib/capssh-boot", "echo booted > /var/lib/capssh-boot/stamp"},
			Users:        users, KubeadmVerbosity: "--v 5",
		},
		JoinConfiguration: joinConfiguration,
	})
	if err != nil {
		panic(err)
	}
	write(out+"/join.yaml", join)

	for _, extra := range []struct {
		name string
		ntp  *bootstrapv1.NTP
		ds   *bootstrapv1.DiskSetup
		m    []bootstrapv1.MountPoints
	}{
		{"ntp", &bootstrapv1.NTP{Enabled: ptr.To(true), Servers: []string{"0.pool.ntp.org"}}, nil, nil},
		{"disk", nil, &bootstrapv1.DiskSetup{
			Partitions:  []bootstrapv1.Partition{{Device: "/dev/sdb", Layout: ptr.To(true), TableType: "gpt"}},
			Filesystems: []bootstrapv1.Filesystem{{Device: "/dev/sdb1", Filesystem: "ext4", Label: "data"}},
		}, []bootstrapv1.MountPoints{{"LABEL=data", "/var/lib/data"}}},
	} {
		data, err := cloudinit.NewNode(&cloudinit.NodeInput{
			BaseUserData:      cloudinit.BaseUserData{NTP: extra.ntp, DiskSetup: extra.ds, Mounts: extra.m},
			JoinConfiguration: joinConfiguration,
		})
		if err != nil {
			panic(err)
		}
		write(out+"/join-"+extra.name+".yaml", data)
	}

	ign, warnings, err := ignition.NewNode(&ignition.NodeInput{
		NodeInput: &cloudinit.NodeInput{
			BaseUserData: cloudinit.BaseUserData{
				AdditionalFiles: []bootstrapv1.File{files[2], {Path: "/etc/modules-load.d/k8s.conf", Permissions: "0644", Append: ptr.To(true), Content: "overlay\nbr_netfilter\n"}}, PreKubeadmCommands: []string{"swapoff -a"}, PostKubeadmCommands: post,
				Users: users[:1], KubeadmVerbosity: "--v 5",
			},
			JoinConfiguration: joinConfiguration,
		},
	})
	if err != nil {
		panic(err)
	}
	if warnings != "" {
		fmt.Fprintln(os.Stderr, warnings)
	}
	write(out+"/join-ignition.json", ign)
}
