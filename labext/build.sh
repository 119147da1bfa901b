#!/usr/bin/env bash
# Rebuild the prebuilt extension into nbchat/labextension (committed; shipped in the wheel).
# Needs node >= 18 and the jupyterlab Python package (its staging/ holds the core versions).
# Run after changing labext/src or js/view.js / js/view.css (the extension bundles them).
set -euo pipefail
cd "$(dirname "$0")"
npm install --no-audit --no-fund
CORE=$(python3 -c 'import jupyterlab, os; print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging"))')
rm -rf ../nbchat/labextension
node node_modules/@jupyterlab/builder/lib/build-labextension.js --core-path "$CORE" .
# what the build was made from: tests/notebook/test_saved.py fails when these change without a rebuild
(cd .. && sha256sum js/view.js js/view.css labext/src/index.js labext/src/saved.css) \
  > ../nbchat/labextension/sources.sha256
