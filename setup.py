"""VC: reservations for virtual clusters on a cluster frontend."""
from setuptools import find_packages, setup

setup(
    name="vc",
    version="0.1.0",
    description="Reserve whole virtual clusters for a time window; cron boots and removes them",
    packages=find_packages(include=["vc", "vc.*"]),
    python_requires=">=3.9",
    install_requires=[
        "PyMySQL>=1.1,<2",
        "Jinja2>=3.1,<4",
        "paramiko>=3.4,<6",
        # SSH key validation and the per-cluster key pair (also a paramiko dependency)
        "cryptography>=3.4",
        # cloud-init NoCloud seeds: the YAML files (pycdlib, below, writes the ISO)
        "PyYAML>=5.1,<7",
        # built from source against the system libvirt (needs libvirt-dev, pkg-config, gcc)
        "libvirt-python>=9.0,<13",
        # cloud-init NoCloud seeds (ISO9660, label cidata) written in pure Python
        "pycdlib>=1.11,<2",
    ],
    extras_require={
        # playwright drives Debian's /usr/bin/chromium (never 'playwright install')
        # aiosmtpd: the local SMTP sink the notice tests mail to (tests/smtpsink.py)
        "test": ["pytest>=7.4,<10", "playwright>=1.40,<2", "aiosmtpd>=1.4,<2"],
        "dev": ["pytest>=7.4,<10", "playwright>=1.40,<2", "aiosmtpd>=1.4,<2", "ruff>=0.4"],
    },
    scripts=["sbin/vc_ctl.py", "sbin/vc_cron.py", "sbin/vc_vlan.py"],
)
