#!/bin/bash
# Builds the native addon (offline, against the installed Node headers) and the TypeScript.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
if [ -f binding.gyp ]; then
  gyp="$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js"
  nodedir=/usr
  [ -f "$nodedir/include/node/node_api.h" ] || nodedir="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
  if [ ! -f build/Makefile ]; then
    node "$gyp" configure --nodedir="$nodedir" --loglevel=warn
  fi
  node "$gyp" build -j 2 --loglevel=warn
fi
npx tsc -p tsconfig.json
# The web view's page (src/ui/web: DOM, no Node) is checked on its own and bundled into dist/ui.
npx tsc -p tsconfig.web.json
node scripts/bundle-ui.mjs
# One file per CNI plugin for the bin/cni shims (fast start), and weftd's for bin/weftd (a
# restart programs its peers sooner); always rebuilt from src/.
node scripts/bundle-plugins.mjs
# The weft plugin's native front (bin/cni/weft runs it when present): no Node start per CNI call
# when weftd answers. Plain C, libc only.
cc -O2 -Wall -Wextra -o dist/cni/weft.native native/cni_client.c
