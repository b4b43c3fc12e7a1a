#!/usr/bin/env bash
# Installs what tests/console_browser.rs drives the web console with:
# chromium (the Debian package, run headless) and puppeteer-core (npm,
# pinned by package-lock.json, into node_modules here; it downloads no
# browser). Idempotent and quick when both are there. .ci/run calls it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    else
        echo "chromium is missing: install the Debian package chromium (as root: apt-get install chromium)" >&2
        exit 1
    fi
fi
pinned="$(node -p "require('$here/package.json').dependencies['puppeteer-core']")"
installed="$(node -p "try { require('$here/node_modules/puppeteer-core/package.json').version } catch (e) { '' }")"
if [ "$installed" != "$pinned" ]; then
    (cd "$here" && npm ci --silent --no-audit --no-fund)
fi
