#!/usr/bin/env bash
# Installs Debian's chromium for the dashboard's browser test
# (tests/dashboard_test.go), unless /usr/bin/chromium is already there.
# Needs root (or sudo) and Debian's package archive; nothing is downloaded
# from anywhere else. The test runs it when chromium is missing.
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
	exit 0
fi
sudo=''
if [[ $(id -u) != 0 ]]; then
	command -v sudo >/dev/null || {
		echo "install-chromium.sh: /usr/bin/chromium is missing and this is not root: run apt-get install chromium as root" >&2
		exit 1
	}
	sudo='sudo -n'
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt or dpkg run to finish rather than fail at once.
lock=(-o DPkg::Lock::Timeout=300)
$sudo apt-get "${lock[@]}" update
$sudo apt-get "${lock[@]}" install -y chromium
[[ -x /usr/bin/chromium ]] || {
	echo "install-chromium.sh: apt-get install chromium did not install /usr/bin/chromium" >&2
	exit 1
}
