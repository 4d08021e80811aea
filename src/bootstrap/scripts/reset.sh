# shellcheck shell=sh
# capssh host reset: undo what kubeadm and the bootstrap did, so the host can join again.
# Every step tolerates a host where that part never existed and is bounded in time (a hung
# mount or runtime must not hang the reset forever); the verification that follows decides
# whether the host is clean.
set -u
say() { echo "[capssh] $*"; }
bounded() { # seconds command...: runs it, killed after that long
  limit=$1
  shift
  timeout -k 10 "$limit" "$@"
}
# The control-plane endpoint's address, read before kubeadm reset removes the kubeconfigs.
endpoint=$(sed -n 's#^ *server: https://\[\{0,1\}\([^]/]*\)\]\{0,1\}:[0-9]*$#\1#p' /etc/kubernetes/admin.conf /etc/kubernetes/kubelet.conf 2>/dev/null | head -n 1)
if command -v kubeadm >/dev/null 2>&1; then
  bounded 180 kubeadm reset -f 2>&1 || say "kubeadm reset exited with status $?"
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  bounded 60 systemctl stop kubelet 2>/dev/null
  bounded 60 systemctl disable kubeadm.service 2>/dev/null
else
  # Without systemd, only a kubelet of this host's own PID namespace can be ours.
  pkill -x --ns $$ --nslist pid kubelet 2>/dev/null
fi
if command -v crictl >/dev/null 2>&1; then
  bounded 120 crictl rmp -af >/dev/null 2>&1 || say "crictl could not remove every pod"
fi
# A Pod sandbox whose network the CNI never set up (scheduled before the node had its podCIDR)
# cannot be stopped through the CRI either: its network teardown fails the same way, and it
# stays. containerd's own client removes what is left of Kubernetes' containers; containerd is
# then restarted so that its CRI plugin forgets them too.
if command -v ctr >/dev/null 2>&1; then
  left=$(bounded 30 ctr -n k8s.io containers ls -q 2>/dev/null)
  for id in $left; do
    bounded 30 ctr -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1
    bounded 30 ctr -n k8s.io tasks delete -f "$id" >/dev/null 2>&1
    bounded 30 ctr -n k8s.io containers delete "$id" >/dev/null 2>&1 || say "could not remove container $id"
  done
  if [ -n "$left" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    say "removed $(echo "$left" | wc -l) containers the CRI left; restarting containerd"
    bounded 90 systemctl restart containerd 2>/dev/null || say "containerd did not restart"
  fi
fi
# Volumes still mounted under the kubelet's and etcd's folders are unmounted, never deleted
# through: an NFS or iSCSI volume holds someone's data. A mount that will not go (busy, or a
# hung server) is detached lazily; the removal below stays on each folder's own file system.
for top in /var/lib/kubelet /var/lib/etcd; do
  awk -v top="$top/" 'index($2, top) == 1 {print $2}' /proc/mounts | sort -r | while IFS= read -r mount; do
    mount=$(printf '%b' "$mount") # /proc/mounts escapes spaces as \040
    bounded 30 umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || say "could not unmount $mount"
  done
done
for dir in /etc/kubernetes /var/lib/kubelet /var/lib/etcd /etc/cni/net.d; do
  [ -d "$dir" ] || continue
  find "$dir" -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system {} + 2>/dev/null || say "could not empty $dir"
done
rm -rf /run/cluster-api /run/kubeadm /etc/kubeadm.yml /etc/kubeadm.sh /etc/systemd/system/kubeadm.service
# Only Kubernetes' and CNI plugins' rules: the host's own firewall stays as it was.
if command -v iptables-save >/dev/null 2>&1 && command -v iptables-restore >/dev/null 2>&1; then
  iptables-save | grep -v -E 'KUBE-|CNI-|cali-|flannel|cilium' | iptables-restore || say "iptables cleanup failed"
fi
if command -v ipvsadm >/dev/null 2>&1; then ipvsadm --clear; fi
# A control-plane VIP that kube-vip (or a static keepalived Pod) held here: killed with its Pod, it
# never took the address down, and a host answering for a VIP it no longer serves breaks the
# cluster's endpoint and refuses this host's own next join. Only a host address (/32, /128) that
# no SSH client came in on goes, and not while a keepalived of the host's own still runs.
if [ -n "$endpoint" ] && ! pgrep -x keepalived >/dev/null 2>&1; then
  ours=$(ss -Htn state established '( sport = :22 )' 2>/dev/null | awk '{print $3}' | sed 's/:[0-9]*$//; s/^\[//; s/\]$//; s/^::ffff://' | sort -u)
  ip -o addr show 2>/dev/null | awk -v a="$endpoint" '{split($4, p, "/"); if (p[1] == a && (p[2] == "32" || p[2] == "128")) print $2, $4}' |
    while read -r dev cidr; do
      if printf '%s\n' "$ours" | grep -qx "$endpoint"; then
        say "kept $cidr on $dev: an SSH client reached this host there"
      elif ip addr del "$cidr" dev "$dev"; then
        say "removed the control-plane endpoint $cidr from $dev"
      fi
    done
fi
# The CNIs' own links: a bridge left with the last cluster's Pod gateway address makes the next
# cluster's CNI fail on this host (the node gets another podCIDR).
for link in kube-ipvs0 cni0 kube-bridge kube-dummy-if flannel.1 vxlan.calico tunl0 cilium_host cilium_net; do
  ip link delete "$link" 2>/dev/null
done
# kube-router's routes to the other nodes' Pods (it marks them protocol 17): left behind, one of
# them may point this host's next podCIDR at another node. Only the way back to each SSH client
# connected now is kept, as a host route of protocol 252 (earlier ones go): capssh running in a
# cluster this host was part of (a self-hosted management cluster) reaches it from a Pod address
# that one of those routes led back to, and must still read this reset's result and reach the
# host in the pool; until that cluster's CNI stops counting the host as one of its nodes, its
# Pods' traffic to the host is not masqueraded.
way_back() { # address: "via dev" of the route to it, if through a gateway
  ip -o route get "$1" 2>/dev/null | sed -n 's/.* via \([^ ]*\) dev \([^ ]*\).*/\1 \2/p'
}
kept=""
for peer in $(ss -Htn state established '( sport = :22 )' 2>/dev/null | awk '{print $4}' | sed -n 's/^\([0-9.]*\):[0-9]*$/\1/p' | sort -u); do
  before=$(way_back "$peer")
  [ -n "$before" ] && kept="$kept $peer,$(echo "$before" | tr ' ' ',')"
done
ip route flush proto 17 2>/dev/null
ip route flush proto 252 2>/dev/null
for entry in $kept; do
  peer=${entry%%,*}
  via=${entry#*,}
  dev=${via#*,}
  via=${via%%,*}
  [ "$(way_back "$peer")" = "$via $dev" ] || ip route replace "$peer/32" via "$via" dev "$dev" proto 252 2>/dev/null
done
if command -v ipset >/dev/null 2>&1; then
  ipset list -n 2>/dev/null | grep -E '^(kube-router-|KUBE-)' | while IFS= read -r set; do ipset destroy "$set" 2>/dev/null; done
fi
# Old bootstrap and preparation records go too: the next machine on this host gets fresh jobs.
find /var/lib/capssh/jobs -mindepth 1 -maxdepth 1 \( -name 'bootstrap-*' -o -name 'prepare-*' \) -exec rm -rf {} + 2>/dev/null
say "cleanup finished"
