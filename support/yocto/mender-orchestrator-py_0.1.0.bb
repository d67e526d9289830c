SUMMARY = "Pluggable multi-component OTA update orchestrator for Mender"
DESCRIPTION = "The mender-orchestrator command, the mender-orchestrator-manifest Update \
Module, the inventory script, the rootfs-image Interface and the boot-time resume unit."
HOMEPAGE = "https://docs.mender.io/"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# Built from the release sdist (python -m build --sdist). Until it is on PyPI, point
# PYPI_SRC_URI at wherever the sdists are kept (a bbappend or local.conf).
PYPI_PACKAGE = "mender_orchestrator_py"
# a placeholder until a release: `support/yocto/recipes.py set-checksums DIST_DIR` sets it
SRC_URI[sha256sum] = "UNSET-run-support/yocto/recipes.py-set-checksums"

inherit pypi python_setuptools_build_meta systemd

RDEPENDS:${PN} = " \
    python3-core \
    python3-sqlite3 \
    python3-json \
    python3-compression \
    python3-pluggy \
    python3-stevedore \
    python3-click \
    python3-pyyaml \
    python3-cryptography \
    python3-zstandard \
    python3-requests \
    python3-urllib3 \
    jq \
"

# the Mender-side files, from the sdist, by the same Makefile a device install uses; the
# datastore link into /data is left to the image (PERSISTENT does not exist in ${D})
do_install:append() {
    oe_runmake -C ${S}/support install DESTDIR=${D} prefix=${prefix} \
        systemdunitdir=${systemd_system_unitdir} BINDIR=${bindir} \
        DATASTORE=${localstatedir}/lib/mender-orchestrator
    install -d -m 0755 ${D}${sysconfdir}/mender-orchestrator
}

SYSTEMD_SERVICE:${PN} = "mender-orchestrator-resume.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

FILES:${PN} += " \
    ${datadir}/mender \
    ${datadir}/mender-orchestrator \
    ${sysconfdir}/mender-orchestrator \
    ${systemd_system_unitdir}/mender-orchestrator-resume.service \
"
