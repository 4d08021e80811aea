# shellcheck shell=sh
# A provisioned host still answers, as root: prints the uid commands run as.
id -u
