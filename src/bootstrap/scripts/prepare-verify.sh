# --- mode None (verify.sh) ---
# A pre-baked host: nothing is changed, the versions are only reported ("TOOL PATH VERSION"
# lines) and judged by capssh.
for tool in kubelet kubeadm; do
  path=$(command -v "$tool" || true)
  echo "$tool ${path:--} $(version_of "$tool" "$path")"
done
# --- end of verify.sh ---
