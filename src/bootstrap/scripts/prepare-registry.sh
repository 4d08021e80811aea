# --- registry mirrors (registry.sh) ---
# Set above lib.sh: REGISTRY_MIRRORS (lines "<registry> <endpoint>"), REGISTRY_CA (PEM or empty),
# REGISTRY_AUTH (base64 of user:password, or empty) and REGISTRY_CREDENTIALS (where the
# credentials came from, for messages).

# registry_check_all: each mirror must answer and take the credentials before anything is
# installed: a registry kubeadm could not pull from fails the job with nothing changed. The
# credentials never reach a command line: printf is a shell builtin, and curl reads them from a
# file only root can read.
registry_check_all() {
  [ -n "$REGISTRY_MIRRORS" ] || return 0
  command -v curl >/dev/null 2>&1 || fail MissingTool "the host has no curl to check the registry mirrors with"
  staged_ca=""
  if [ -n "$REGISTRY_CA" ]; then
    staged_ca=$STAGING/registry-ca.crt
    printf '%s\n' "$REGISTRY_CA" > "$staged_ca"
  fi
  # A here-document, not a pipe: the loop runs in this shell, so fail ends the job.
  while read -r registry endpoint; do
    [ -z "$registry" ] || registry_check "$registry" "$endpoint" "$staged_ca"
  done <<CAPSSH_MIRRORS
$REGISTRY_MIRRORS
CAPSSH_MIRRORS
}

# registry_install: the CA and one containerd hosts.toml per mirror (0600: it carries the
# credentials). Unchanged files are left alone; a new password is written.
registry_install() {
  [ -n "$REGISTRY_MIRRORS" ] || return 0
  certs=/etc/containerd/certs.d
  ca_path=""
  if [ -n "$staged_ca" ]; then
    ca_path=$certs/capssh-registry-ca.crt
    install_file "$staged_ca" "$ca_path" 0644
  fi
  while read -r registry endpoint; do
    [ -n "$registry" ] || continue
    server="https://$registry"
    [ "$registry" != docker.io ] || server=https://registry-1.docker.io
    (
      umask 077
      printf 'server = "%s"\n\n[host."%s"]\n  capabilities = ["pull", "resolve"]\n' "$server" "$endpoint"
      [ -z "$ca_path" ] || printf '  ca = "%s"\n' "$ca_path"
      [ -z "$REGISTRY_AUTH" ] || printf '\n[host."%s".header]\n  Authorization = ["Basic %s"]\n' "$endpoint" "$REGISTRY_AUTH"
    ) > "$STAGING/hosts.toml"
    install_file "$STAGING/hosts.toml" "$certs/$registry/hosts.toml" 0600
    rm -f "$STAGING/hosts.toml"
  done <<CAPSSH_MIRRORS
$REGISTRY_MIRRORS
CAPSSH_MIRRORS
}

# registry_check REGISTRY ENDPOINT CA_PATH: GET /v2/ as containerd will, with the CA and the
# credentials; fails the job with what the mirror said.
registry_check() {
  cfg="$STAGING/registry-check.cfg"
  (
    umask 077
    printf 'url = "%s/v2/"\n' "$2"
    [ -z "$REGISTRY_AUTH" ] || printf 'header = "Authorization: Basic %s"\n' "$REGISTRY_AUTH"
    [ -z "$3" ] || printf 'cacert = "%s"\n' "$3"
  ) > "$cfg"
  status=0
  code=$(curl -sS -o /dev/null -D "$STAGING/registry-headers" -w '%{http_code}' --connect-timeout 10 --max-time 30 -K "$cfg" 2> "$STAGING/registry-error") || status=$?
  rm -f "$cfg"
  # curl's first line says what went wrong ("curl: (7) Failed to connect to ..."); the rest is advice.
  said=$(head -n 1 "$STAGING/registry-error" 2>/dev/null | tr -d '\r' | sed 's/^curl: //')
  case "$code" in
    200)
      say "registry mirror $2 for $1 answers" ;;
    401 | 403)
      if grep -qi '^www-authenticate: *bearer' "$STAGING/registry-headers" 2>/dev/null; then
        say "registry mirror $2 for $1 uses token authentication: the first pull shows whether the credentials work"
        return 0
      fi
      [ -z "$REGISTRY_AUTH" ] || fail RegistryAuthFailed "the registry mirror $2 (for $1) refused the pull credentials from $REGISTRY_CREDENTIALS: HTTP $code"
      fail RegistryAuthFailed "the registry mirror $2 (for $1) asks for credentials (HTTP $code): set registry.credentialsSecretRef" ;;
    "" | 000)
      # 60: the peer's certificate cannot be verified; 35 and 58-59, 77, 83, 90-91: TLS set-up.
      case "$status" in
        35 | 58 | 59 | 60 | 77 | 83 | 90 | 91)
          fail RegistryUntrusted "the registry mirror $2 (for $1) fails TLS verification on the host ($said): set registry.caRef to the CA that signed its certificate" ;;
      esac
      fail RegistryUnreachable "the registry mirror $2 (for $1) does not answer: ${said:-no answer}" ;;
    *)
      fail RegistryUnreachable "the registry mirror $2 (for $1) answered HTTP $code to GET /v2/: is it an OCI distribution registry?" ;;
  esac
}
# --- end of registry.sh ---
