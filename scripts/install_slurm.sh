#!/usr/bin/env bash
# Install the Debian packages of a one-node SLURM cluster (the `slurm` tests start it; see tests/slurm_cluster.py).
# Idempotent: does nothing when the daemons are already on PATH. Needs root (or sudo) and Debian/Ubuntu's apt.
# The tests never install anything themselves; without these packages they skip.
set -euo pipefail

need=()
for cmd in slurmctld slurmd sbatch munged; do
    command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
if [ ${#need[@]} -eq 0 ]; then
    echo "install_slurm: slurmctld, slurmd, slurm-client and munge already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install_slurm: need root or sudo to apt-get install" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# Installing the packages must not start their services (containers have no systemd; the tests start the
# daemons themselves with their own slurm.conf): policy-rc.d exit 101 tells invoke-rc.d "not allowed".
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    made_policy=1
fi
trap '[ "$made_policy" = 1 ] && $SUDO rm -f "$policy"' EXIT

# `apt-get update` only when the package lists are missing (a fresh container) or the install fails on stale ones.
if ! $SUDO apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
echo "install_slurm: installed $(slurmctld -V) and $(munged --version 2>&1 | head -1)"
