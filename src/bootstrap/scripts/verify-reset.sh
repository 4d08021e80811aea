# shellcheck shell=sh
# What must be true of a host before it returns to the pool; prints what is not (nothing: clean).
problems=""
# A kubelet of this host's own PID namespace (on a machine shared by containers, others' are not ours).
pgrep -x --ns $$ --nslist pid kubelet >/dev/null 2>&1 && problems="$problems kubelet-running"
for f in /etc/kubernetes/kubelet.conf /etc/kubernetes/admin.conf /run/cluster-api/bootstrap-success.complete; do
  [ -e "$f" ] && problems="$problems $f"
done
[ -n "$(ls -A /etc/kubernetes/manifests 2>/dev/null)" ] && problems="$problems /etc/kubernetes/manifests"
echo "$problems"
