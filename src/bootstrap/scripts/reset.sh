# shellcheck shell=sh
# capssh host cleanup: undo what kubeadm and the bootstrap did, so the host can join again.
# Every step tolerates a host where that part never existed; the verification that follows
# decides whether the host is clean.
set -u
say() { echo "[capssh] $*"; }
if command -v kubeadm >/dev/null 2>&1; then
  kubeadm reset -f 2>&1 || say "kubeadm reset exited with status $?"
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl stop kubelet 2>/dev/null
  systemctl disable kubeadm.service 2>/dev/null
else
  # Without systemd, only a kubelet of this host's own PID namespace can be ours.
  pkill -x --ns $$ --nslist pid kubelet 2>/dev/null
fi
if command -v crictl >/dev/null 2>&1; then
  crictl rmp -af >/dev/null 2>&1 || say "crictl could not remove every pod"
fi
rm -rf /etc/kubernetes/* /var/lib/kubelet/* /var/lib/etcd/* /etc/cni/net.d/* \
  /run/cluster-api /run/kubeadm /etc/kubeadm.yml /etc/kubeadm.sh /etc/systemd/system/kubeadm.service
# Only Kubernetes' and CNI plugins' rules: the host's own firewall stays as it was.
if command -v iptables-save >/dev/null 2>&1 && command -v iptables-restore >/dev/null 2>&1; then
  iptables-save | grep -v -E 'KUBE-|CNI-|cali-|flannel|cilium' | iptables-restore || say "iptables cleanup failed"
fi
if command -v ipvsadm >/dev/null 2>&1; then ipvsadm --clear; fi
for link in kube-ipvs0 cni0 flannel.1 vxlan.calico tunl0 cilium_host cilium_net; do
  ip link delete "$link" 2>/dev/null
done
# Old bootstrap and preparation records go too: the next machine on this host gets fresh jobs.
find /var/lib/capssh/jobs -mindepth 1 -maxdepth 1 \( -name 'bootstrap-*' -o -name 'prepare-*' \) -exec rm -rf {} + 2>/dev/null
say "cleanup finished"
