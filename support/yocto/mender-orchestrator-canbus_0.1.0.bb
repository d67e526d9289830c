SUMMARY = "mender-orchestrator driver: UDS flashing over ISO-TP on python-can"
HOMEPAGE = "https://docs.mender.io/"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

PYPI_PACKAGE = "mender_orchestrator_canbus"
# a placeholder until a release: `support/yocto/recipes.py set-checksums DIST_DIR` sets it
SRC_URI[sha256sum] = "UNSET-run-support/yocto/recipes.py-set-checksums"

inherit pypi python_setuptools_build_meta

# python3-can-isotp, python3-udsoncan, python3-bincopy and python3-doipclient are not in
# meta-python: the layer
# needs recipes for them (see README.md)
RDEPENDS:${PN} = " \
    mender-orchestrator-py \
    python3-bincopy \
    python3-can \
    python3-can-isotp \
    python3-pyyaml \
    python3-udsoncan \
    python3-doipclient \
"
