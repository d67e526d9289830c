SUMMARY = "mender-orchestrator driver: Zephyr/MCUboot devices over SMP (UDP, serial)"
HOMEPAGE = "https://docs.mender.io/"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

PYPI_PACKAGE = "mender_orchestrator_mcuboot"
# a placeholder until a release: `support/yocto/recipes.py set-checksums DIST_DIR` sets it
SRC_URI[sha256sum] = "UNSET-run-support/yocto/recipes.py-set-checksums"

inherit pypi python_setuptools_build_meta

RDEPENDS:${PN} = " \
    mender-orchestrator-py \
    python3-smpclient \
    python3-smp \
    python3-cbor2 \
    python3-cryptography \
    python3-pyserial \
"
