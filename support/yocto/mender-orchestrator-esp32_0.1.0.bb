SUMMARY = "mender-orchestrator driver: ESP32 over its ROM serial loader (esptool)"
HOMEPAGE = "https://docs.mender.io/"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

PYPI_PACKAGE = "mender_orchestrator_esp32"
# a placeholder until a release: `support/yocto/recipes.py set-checksums DIST_DIR` sets it
SRC_URI[sha256sum] = "UNSET-run-support/yocto/recipes.py-set-checksums"

inherit pypi python_setuptools_build_meta

RDEPENDS:${PN} = " \
    mender-orchestrator-py \
    python3-esptool \
    python3-cryptography \
    python3-pyserial \
"
