package capie2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/test/framework"
)

// What is collected from each machine's host: the file (under the machine's output folder) and
// the command that writes it.
var hostLogs = []struct{ file, command string }{
	{"journal-kubelet-containerd.log", "journalctl --no-pager -u kubelet -u containerd"},
	// One line per job capssh started on the host.
	{"capssh-jobs/journal", "cat /var/lib/capssh/jobs/journal"},
}

// jobsDir is where capssh keeps one folder per host-side job (src/ssh/job.rs JOBS_DIR).
const jobsDir = "/var/lib/capssh/jobs"

// jobID is what capssh allows in a job id, and so in a local file name here.
var jobID = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// SSHLogCollector collects a capssh machine's logs over SSH: Machine -> SSHMachine
// (spec.infrastructureRef) -> SSHHost (SSHMachine spec.hostRef) -> address, port, user, jump
// host and the credentials Secret of the SSHHost. It implements framework.ClusterLogCollector.
type SSHLogCollector struct{}

var _ framework.ClusterLogCollector = SSHLogCollector{}

// CollectMachineLog writes the host's kubelet and containerd journal and every capssh job log
// into outputPath. Collection is best effort: the framework prints the error and goes on.
func (SSHLogCollector) CollectMachineLog(ctx context.Context, c client.Client, m *clusterv1.Machine, outputPath string) error {
	target, err := machineHost(ctx, c, m)
	if err != nil {
		return err
	}
	conn, err := dialHost(ctx, target, clientSecretGetter(c, m.Namespace))
	if err != nil {
		return err
	}
	defer conn.Close()

	var errs []error
	for _, l := range hostLogs {
		if err := runToFile(ctx, conn, l.command, filepath.Join(outputPath, l.file)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", l.command, err))
		}
	}
	errs = append(errs, collectJobLogs(ctx, conn, filepath.Join(outputPath, "capssh-jobs")))
	return kerrors.NewAggregate(errs)
}

// CollectMachinePoolLog does nothing: capssh has no MachinePool support.
func (SSHLogCollector) CollectMachinePoolLog(context.Context, client.Client, *clusterv1.MachinePool, string) error {
	return nil
}

// CollectInfrastructureLogs does nothing: an SSHCluster has no infrastructure of its own (no load
// balancer, no network) to collect from; its objects are dumped with the namespace's resources.
func (SSHLogCollector) CollectInfrastructureLogs(context.Context, client.Client, *clusterv1.Cluster, string) error {
	return nil
}

// machineHost follows a Machine to the SSHHost its SSHMachine claimed.
func machineHost(ctx context.Context, c client.Client, m *clusterv1.Machine) (hostTarget, error) {
	ref := m.Spec.InfrastructureRef
	if ref.Kind != sshMachineGVK.Kind || ref.APIGroup != infraGroup || ref.Name == "" {
		return hostTarget{}, fmt.Errorf("machine %s/%s: infrastructureRef is not an SSHMachine (%s %s)", m.Namespace, m.Name, ref.APIGroup, ref.Kind)
	}
	sshMachine := &unstructured.Unstructured{}
	sshMachine.SetGroupVersionKind(sshMachineGVK)
	if err := c.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: ref.Name}, sshMachine); err != nil {
		return hostTarget{}, fmt.Errorf("reading SSHMachine %s/%s: %w", m.Namespace, ref.Name, err)
	}
	var machineSpec sshMachineSpec
	if err := decodeField(sshMachine, &machineSpec, "spec"); err != nil {
		return hostTarget{}, err
	}
	if machineSpec.HostRef == nil || machineSpec.HostRef.Name == "" {
		return hostTarget{}, fmt.Errorf("SSHMachine %s/%s has not claimed a host (spec.hostRef is empty)", m.Namespace, ref.Name)
	}
	return readHostTarget(ctx, c, m.Namespace, machineSpec.HostRef.Name)
}

// readHostTarget reads an SSHHost's connection details from the cluster.
func readHostTarget(ctx context.Context, c client.Client, namespace, name string) (hostTarget, error) {
	host := &unstructured.Unstructured{}
	host.SetGroupVersionKind(sshHostGVK)
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, host); err != nil {
		return hostTarget{}, fmt.Errorf("reading SSHHost %s/%s: %w", namespace, name, err)
	}
	return hostTargetOf(host)
}

// hostTargetOf decodes an SSHHost object read from the cluster.
func hostTargetOf(host *unstructured.Unstructured) (hostTarget, error) {
	t := hostTarget{name: host.GetNamespace() + "/" + host.GetName()}
	if err := decodeField(host, &t.spec, "spec"); err != nil {
		return hostTarget{}, err
	}
	var status sshHostStatus
	if err := decodeField(host, &status, "status"); err != nil {
		return hostTarget{}, err
	}
	t.observedFingerprint = status.ObservedHostKeyFingerprint
	if t.spec.Address == "" {
		return hostTarget{}, fmt.Errorf("SSHHost %s has no spec.address", t.name)
	}
	return t, nil
}

// collectJobLogs copies /var/lib/capssh/jobs/<id>/log of every job into dir/<id>.log.
func collectJobLogs(ctx context.Context, conn *hostConn, dir string) error {
	list, err := conn.output(ctx, `for f in `+jobsDir+`/*/log; do [ -f "$f" ] && echo "$f"; done; true`)
	if err != nil {
		return fmt.Errorf("listing %s: %w", jobsDir, err)
	}
	var errs []error
	for _, path := range strings.Split(strings.TrimSpace(string(list)), "\n") {
		id := strings.TrimSuffix(strings.TrimPrefix(path, jobsDir+"/"), "/log")
		if path == "" || !jobID.MatchString(id) {
			continue
		}
		if err := runToFile(ctx, conn, "cat "+shellQuote(path), filepath.Join(dir, id+".log")); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	return kerrors.NewAggregate(errs)
}

// runToFile runs command on the host, its stdout into path and its stderr into path.stderr
// (removed when empty).
func runToFile(ctx context.Context, conn *hostConn, command, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	out, err := os.Create(path) //nolint:gosec // path is built from the output folder and validated names
	if err != nil {
		return err
	}
	defer out.Close()
	errPath := path + ".stderr"
	errOut, err := os.Create(errPath) //nolint:gosec // as above
	if err != nil {
		return err
	}
	runErr := conn.run(ctx, command, out, errOut)
	_ = errOut.Close()
	if info, statErr := os.Stat(errPath); statErr == nil && info.Size() == 0 {
		_ = os.Remove(errPath)
	}
	return runErr
}
