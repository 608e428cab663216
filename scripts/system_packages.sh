#!/usr/bin/env bash
# Make sure Debian/Ubuntu system packages are there before a command that needs them.
#
#   scripts/system_packages.sh [--optional] "what they are for" PACKAGE...
#
# Missing packages are installed with apt-get when run as root on Debian/Ubuntu (as .ci/run and the
# Makefile do). Otherwise one line says which are missing, what for, and how to install them; the exit
# status is then 1, or 0 with --optional (the command goes on without them).
set -euo pipefail
optional=0
if [[ "${1:-}" == "--optional" ]]; then optional=1; shift; fi
purpose="$1"; shift

installed() {  # a Debian package (dpkg) or, elsewhere, a command of that name
  if command -v dpkg >/dev/null 2>&1; then dpkg -s "$1" >/dev/null 2>&1; else command -v "$1" >/dev/null 2>&1; fi
}

missing=()
for pkg in "$@"; do installed "$pkg" || missing+=("$pkg"); done
((${#missing[@]})) || exit 0

if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages for ${purpose}: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi
level=$([[ $optional == 1 ]] && echo "note" || echo "error")
echo "${level}: ${purpose} needs ${missing[*]}: install with \`sudo apt-get install ${missing[*]}\`" \
     "(Debian/Ubuntu; macOS: \`brew install ${missing[*]}\`)" >&2
exit $((1 - optional))
