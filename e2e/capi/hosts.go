package capie2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"sigs.k8s.io/cluster-api/test/framework"
)

// SecondHostsDirVariable names the hosts folder of ClusterctlUpgrade's second management cluster
// (-capssh.second-hosts-dir): other boxes than those of CAPSSH_E2E_HOSTS_DIR.
const SecondHostsDirVariable = "CAPSSH_E2E_SECOND_HOSTS_DIR"

// namespacePlaceholder is replaced by the spec's namespace in the hosts files.
const namespacePlaceholder = "${NAMESPACE}"

// credentialsFinalizer is put on every Secret this suite creates. When a spec's namespace is
// deleted, Kubernetes deletes its Secrets and its SSHHosts in no fixed order, and a free SSHHost
// that is deleted needs its credentials one last time: capssh logs in to take the box's owner
// record (/var/lib/capssh/owner) off. Without the record gone, the next spec's SSHHost for the
// same box is refused as DuplicateHost. The finalizer keeps the Secrets until the namespace has
// no SSHHost left; the hook's cleanup then removes it.
const credentialsFinalizer = "e2e.capssh/keep-until-sshhosts-gone"

// Hosts registers the SSHHosts (and their credentials Secrets) a spec's machines claim, from
// YAML files written by whoever runs the suite. Every spec registers the same boxes, in its own
// namespace: a box can stand for a new SSHHost once the previous spec's SSHHost for it is gone.
type Hosts struct {
	// Dir holds *.yaml / *.yml files (e.g. hosts.yaml): Secrets labelled
	// infrastructure.cluster.x-k8s.io/capssh-credentials: "true" and SSHHosts, every object in
	// the namespace ${NAMESPACE} (or none: the spec's namespace is set).
	Dir string
	// GoneIntervals bound the wait, once the spec's namespace is being deleted, for its SSHHosts
	// to be gone (their owner records released).
	GoneIntervals []interface{}
	// ManagementKubeconfig is the kubeconfig path of the management (bootstrap) cluster's proxy.
	// Dir's hosts are registered there only: SelfHosted calls the hook again with the proxy of
	// the cluster it made, before `clusterctl init` there, and its `clusterctl move` brings the
	// SSHHosts and their Secrets over.
	ManagementKubeconfig string
	// SecondDir, when set, is a folder like Dir whose hosts are registered when the hook is called
	// with any other proxy than the management cluster's. ClusterctlUpgrade calls it first on the
	// management cluster (the namespace of the cluster it turns into a second management
	// cluster), then on that second cluster (the namespace of its workload cluster): each
	// cluster's machines need their own boxes, as a box stands for one SSHHost at a time. When
	// empty, the hook does nothing on other clusters (SelfHosted).
	SecondDir string
}

// secondClusterProbe bounds the cleanup's first request to a cluster other than the management
// cluster, which may be gone by then (see releaseCredentials).
const secondClusterProbe = time.Minute

// PostNamespaceCreated is the specs' PostNamespaceCreated hook: it creates the Secrets, then the
// other objects, then the SSHHosts, in the spec's namespace, and registers the cleanup that lets
// the Secrets go once the SSHHosts are gone. On the management cluster it registers Dir's hosts;
// on any other cluster SecondDir's, or nothing when SecondDir is empty.
func (h Hosts) PostNamespaceCreated(ctx context.Context) func(framework.ClusterProxy, string) {
	return func(proxy framework.ClusterProxy, namespace string) {
		Expect(h.ManagementKubeconfig).ToNot(BeEmpty(), "the hosts hook needs the management cluster's kubeconfig path")
		dir, secondCluster := h.Dir, false
		if filepath.Clean(proxy.GetKubeconfigPath()) != filepath.Clean(h.ManagementKubeconfig) {
			if h.SecondDir == "" {
				fmt.Fprintf(ginkgo.GinkgoWriter, "Not registering SSHHosts in namespace %s of cluster %s (%s): hosts are registered on the management cluster only, clusterctl move brings them\n",
					namespace, proxy.GetName(), proxy.GetKubeconfigPath())
				return
			}
			dir, secondCluster = h.SecondDir, true
		}
		Expect(dir).ToNot(BeEmpty(), "no hosts directory: set -capssh.hosts-dir or CAPSSH_E2E_HOSTS_DIR")
		objects, err := readHostObjects(dir, namespace)
		Expect(err).ToNot(HaveOccurred())
		c := proxy.GetClient()

		var secretNames []string
		var secrets, hosts, others []*unstructured.Unstructured
		for _, obj := range objects {
			switch {
			case obj.GetKind() == "Secret" && obj.GroupVersionKind().Group == "":
				secrets = append(secrets, obj)
				secretNames = append(secretNames, obj.GetName())
			case obj.GroupVersionKind() == sshHostGVK:
				hosts = append(hosts, obj)
			default:
				others = append(others, obj)
			}
		}
		Expect(hosts).ToNot(BeEmpty(), "no SSHHost (%s) in %s", sshHostGVK, dir)

		// Registered before anything is created, so that it also runs when a Create fails.
		cluster := proxy.GetName()
		ginkgo.DeferCleanup(func() { h.releaseCredentials(ctx, c, cluster, namespace, secretNames, secondCluster) })

		// Secrets first: an SSHHost is probed as soon as it exists, with its Secret.
		for _, obj := range secrets {
			obj.SetFinalizers(append(obj.GetFinalizers(), credentialsFinalizer))
			Expect(c.Create(ctx, obj)).To(Succeed(), "creating Secret %s/%s", namespace, obj.GetName())
		}
		for _, obj := range others {
			Expect(c.Create(ctx, obj)).To(Succeed(), "creating %s %s/%s", obj.GetKind(), namespace, obj.GetName())
		}
		for _, obj := range hosts {
			Expect(c.Create(ctx, obj)).To(Succeed(), "creating SSHHost %s/%s", namespace, obj.GetName())
		}
		fmt.Fprintf(ginkgo.GinkgoWriter, "Registered %d SSHHosts from %s in namespace %s of cluster %s\n", len(hosts), dir, namespace, proxy.GetName())
	}
}

// releaseCredentials runs after the spec's own cleanup. When that cleanup deleted the namespace,
// it waits until the namespace has no SSHHost left; in every case it then takes the finalizer
// off the Secrets, so that the namespace can go (or, with -e2e.skip-resource-cleanup, be
// deleted later: delete its SSHHosts first then, or the boxes keep their owner records).
//
// secondCluster is true for a cluster other than the management cluster (ClusterctlUpgrade's
// second management cluster), which is usually gone by now. DeferCleanup callbacks run after the
// spec's AfterEach, last registered first, and ClusterctlUpgrade's AfterEach, on its way, deletes
// the workload cluster on the second cluster and waits for it (its machines' boxes are reset
// there), deletes the namespace there without waiting, runs `clusterctl delete --all` there
// (capssh's controller goes, so SSHHosts still being deleted may keep their finalizer and their
// boxes their owner records; the namespace, `clusterctl-upgrade`, and the SSHHost names are the
// same in every run, so the next run's SSHHosts take those records over as after a move), and
// then deletes the second cluster itself from the management cluster and waits for that. So a
// cluster that does not answer here went with its namespace, Secrets and SSHHosts: this logs it
// and returns instead of failing the spec (that first request is bounded by secondClusterProbe).
// When it answers (its deletion was skipped or failed), this works as for the management cluster.
func (h Hosts) releaseCredentials(ctx context.Context, c client.Client, cluster, namespace string, secrets []string, secondCluster bool) {
	ns := &corev1.Namespace{}
	getCtx, cancel := ctx, context.CancelFunc(func() {})
	if secondCluster {
		getCtx, cancel = context.WithTimeout(ctx, secondClusterProbe)
	}
	err := c.Get(getCtx, client.ObjectKey{Name: namespace}, ns)
	cancel()
	if secondCluster && err != nil && !apierrors.IsNotFound(err) {
		fmt.Fprintf(ginkgo.GinkgoWriter, "Cluster %s does not answer (%v): taken as deleted by the spec's cleanup, with namespace %s, its Secrets and SSHHosts\n",
			cluster, err, namespace)
		return
	}
	defer func() {
		for _, name := range secrets {
			Expect(dropFinalizer(ctx, c, namespace, name)).To(Succeed(), "removing %s from Secret %s/%s of cluster %s", credentialsFinalizer, namespace, name, cluster)
		}
	}()
	if err != nil || ns.DeletionTimestamp == nil {
		fmt.Fprintf(ginkgo.GinkgoWriter, "Namespace %s is not being deleted: its Secrets lose their finalizer, its SSHHosts stay\n", namespace)
		return
	}
	Eventually(func(g Gomega) {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(sshHostGVK.GroupVersion().WithKind(sshHostGVK.Kind + "List"))
		g.Expect(c.List(ctx, list, client.InNamespace(namespace))).To(Succeed())
		names := make([]string, 0, len(list.Items))
		for _, item := range list.Items {
			names = append(names, item.GetName())
		}
		g.Expect(names).To(BeEmpty(), "SSHHosts still in the deleted namespace %s (a claimed host waits for its machine's reset)", namespace)
	}, h.GoneIntervals...).Should(Succeed())
}

// dropFinalizer takes credentialsFinalizer off a Secret; a Secret already gone is fine.
func dropFinalizer(ctx context.Context, c client.Client, namespace, name string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		secret := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret); err != nil {
			return client.IgnoreNotFound(err)
		}
		if !controllerutil.RemoveFinalizer(secret, credentialsFinalizer) {
			return nil
		}
		err := c.Update(ctx, secret)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
}

// readHostObjects reads every object of the *.yaml / *.yml files in dir (in name order), with
// ${NAMESPACE} replaced by namespace; an object without a namespace gets it. Object contents
// (Secrets) never appear in the errors.
func readHostObjects(dir, namespace string) ([]*unstructured.Unstructured, error) {
	var files []string
	for _, pattern := range []string{"*.yaml", "*.yml"} {
		matches, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return nil, err
		}
		files = append(files, matches...)
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.yaml or *.yml file in the hosts directory %s", dir)
	}
	var objects []*unstructured.Unstructured
	for _, file := range files {
		data, err := os.ReadFile(file) //nolint:gosec // a file of the hosts directory, chosen by the operator
		if err != nil {
			return nil, err
		}
		data = bytes.ReplaceAll(data, []byte(namespacePlaceholder), []byte(namespace))
		decoder := yamlutil.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for i := 0; ; i++ {
			obj := &unstructured.Unstructured{}
			if err := decoder.Decode(&obj.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("%s: document %d does not decode", file, i)
			}
			if len(obj.Object) == 0 {
				continue
			}
			if obj.GetKind() == "" || obj.GetName() == "" {
				return nil, fmt.Errorf("%s: document %d has no kind or no metadata.name", file, i)
			}
			switch obj.GetNamespace() {
			case "":
				obj.SetNamespace(namespace)
			case namespace:
			default:
				return nil, fmt.Errorf("%s: %s %s is in namespace %q, not the spec's (use %s)", file, obj.GetKind(), obj.GetName(), obj.GetNamespace(), namespacePlaceholder)
			}
			objects = append(objects, obj)
		}
	}
	return objects, nil
}
