#!/bin/sh
# /etc/acpi/poweroff.sh — busybox acpid's action for the ACPI power button (virDomainShutdown).
# acpid runs it from its -c directory: the name in /etc/acpid.conf is relative to /etc/acpi.
echo "VC-ACPI power button -> poweroff" > /dev/console
/etc/vc/shutdown
poweroff -f
