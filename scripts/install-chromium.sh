#!/usr/bin/env bash
# Installs Debian's chromium for the dashboard's browser test
# (tests/dashboard_test.go), unless /usr/bin/chromium is already there.
# Needs root (or password-less sudo) and Debian's package archive; nothing is
# downloaded from anywhere else. make test and the test itself run it.
#
# Where chromium cannot be installed (not root, no sudo, apt fails) it says
# which command installs it and exits 0: make test goes on, and the browser
# test skips itself with the same message. With CI=true (as .ci/run runs) it
# exits 1 instead, since there the browser test must run.
set -euo pipefail

chromium=/usr/bin/chromium
install_cmd='sudo apt-get install chromium'

if [[ -x $chromium ]]; then
	exit 0
fi

# cannot says why chromium is not installed, and what to run; it fails only
# under CI.
cannot() {
	echo "install-chromium.sh: $chromium is missing and $1; install it with: $install_cmd" >&2
	if [[ ${CI:-} == true ]]; then
		echo "install-chromium.sh: CI=true: the dashboard's browser test must run, so this is an error" >&2
		exit 1
	fi
	echo "install-chromium.sh: the dashboard's browser test (tests/dashboard_test.go) will be skipped" >&2
	exit 0
}

sudo=()
if [[ $(id -u) != 0 ]]; then
	command -v sudo >/dev/null || cannot "this is not root and there is no sudo"
	sudo -n true 2>/dev/null || cannot "this is not root and sudo asks for a password"
	sudo=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt or dpkg run to finish rather than fail at once.
lock=(-o DPkg::Lock::Timeout=300)
"${sudo[@]}" apt-get "${lock[@]}" update || cannot "apt-get update failed"
"${sudo[@]}" apt-get "${lock[@]}" install -y chromium || cannot "apt-get install -y chromium failed"
[[ -x $chromium ]] || cannot "apt-get install chromium did not install it"
