#!/usr/bin/env bash
# Rebuild the page's vendored WebGL scatter plot (aesearch/interfaces/static/vendor/) from npm:
# regl-scatterplot and its dependencies bundled by esbuild into one minified ES module, with every
# bundled package's licence beside it. The server then needs no network: the page imports
# /static/vendor/regl-scatterplot.js. Needs node and npm; run from anywhere:
#   bash scripts/vendor_scatterplot.sh [WORK_DIR]
set -euo pipefail

SCATTERPLOT_VERSION=1.16.0
ESBUILD_VERSION=0.28.2
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/aesearch/interfaces/static/vendor"
WORK="${1:-$(mktemp -d)}"

mkdir -p "$WORK" "$OUT"
cd "$WORK"
[ -f package.json ] || npm init -y >/dev/null
npm install --no-audit --no-fund --save-exact "regl-scatterplot@$SCATTERPLOT_VERSION" "esbuild@$ESBUILD_VERSION" >/dev/null
cat > entry.js <<'JS'
export { default, checkSupport, createRegl, createRenderer } from "regl-scatterplot";
JS
node_modules/.bin/esbuild entry.js --bundle --format=esm --minify --target=es2020 \
  --legal-comments=none --outfile="$OUT/regl-scatterplot.js" --log-level=warning

# One licence file per bundled package (the runtime dependencies of regl-scatterplot, transitively).
rm -rf "$OUT/licenses" && mkdir -p "$OUT/licenses"
packages=$(node -e '
  const seen = new Set(); const todo = ["regl-scatterplot"];
  while (todo.length) {
    const name = todo.pop(); if (seen.has(name)) continue; seen.add(name);
    const pkg = require(`./node_modules/${name}/package.json`);
    todo.push(...Object.keys(pkg.dependencies || {}), ...Object.keys(pkg.peerDependencies || {}));
  }
  console.log([...seen].sort().join("\n"));')
{
  echo "| package | version | licence |"
  echo "|---|---|---|"
  for name in $packages; do
    dir="node_modules/$name"
    version=$(node -p "require('./$dir/package.json').version")
    licence=$(node -p "require('./$dir/package.json').license")
    file=$(ls "$dir" | grep -i -E '^(licen[cs]e|copying)' | head -1)
    [ -n "$file" ] || { echo "no licence file in $name" >&2; exit 1; }
    cp "$dir/$file" "$OUT/licenses/${name//\//__}.txt"
    echo "| $name | $version | $licence |"
  done
} > "$OUT/licenses/packages.md"
echo "wrote $OUT/regl-scatterplot.js ($(wc -c < "$OUT/regl-scatterplot.js") bytes) and $OUT/licenses/"
