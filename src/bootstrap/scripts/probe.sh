# shellcheck shell=sh
# Facts about the host as key=value lines; uid proves that commands run as root.
# shellcheck disable=SC1091
. /etc/os-release 2>/dev/null
echo "os=${ID:-unknown}"
echo "os_version=${VERSION_ID:-}"
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
echo "hostname=$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)"
echo "cpus=$(getconf _NPROCESSORS_ONLN)"
awk '/^MemTotal:/ {print "memory_kib=" $2}' /proc/meminfo
echo "uid=$(id -u)"
