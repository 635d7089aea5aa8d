#!/bin/sh
# CycloneDX SBOMs of the images' Python packages, from the locks tools/lock-deps.py writes:
#   tools/sbom.sh            -> sbom/agent.cdx.json, sbom/operator.cdx.json
# cyclonedx-py (cyclonedx-bom, pinned below) runs from a throwaway venv, so the
# project's own venv and the images stay without it.
set -eu
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd -P)
tool=$(mktemp -d)
trap 'rm -rf "$tool"' EXIT
python3 -m venv "$tool"
"$tool/bin/pip" install -q "cyclonedx-bom==7.5.0"
mkdir -p "$root/sbom"
for image in agent operator; do
    "$tool/bin/cyclonedx-py" requirements --output-reproducible --of JSON \
        -o "$root/sbom/$image.cdx.json" "$root/requirements/$image.lock"
    echo "wrote sbom/$image.cdx.json"
done
