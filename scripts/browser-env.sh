# Sourced by `make test` (after scripts/test-env.sh): makes Debian's chromium available for
# the browser tests (tests/browserfixtures.py, Playwright) and exports METACRM_CHROMIUM
# (an executable METACRM_CHROMIUM set by the caller is kept).
# Installs the `chromium` package (and a CJK font) when /usr/bin/chromium is missing: as root, else through
# sudo when it works without a password; `apt-get update` runs only when the install fails
# (a missing or stale package index), then the install is tried once more.
# Never runs `playwright install`: Playwright drives this system browser (executable_path).
# With CI=true a missing browser fails loudly; elsewhere the browser tests skip with a reason.
# Fast when the browser is already there (one file test, no apt).
_metacrm_chromium=/usr/bin/chromium
if [ -n "${METACRM_CHROMIUM:-}" ] && [ -x "$METACRM_CHROMIUM" ]; then
    _metacrm_chromium="$METACRM_CHROMIUM"  # another chromium, chosen by the caller
fi
_metacrm_browser_log="${TMPDIR:-/tmp}/metacrm-browser-env.$$.log"
_metacrm_apt() {
    if [ "$(id -u)" = "0" ]; then
        DEBIAN_FRONTEND=noninteractive "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        sudo -n env DEBIAN_FRONTEND=noninteractive "$@"
    else
        echo "browser-env: not root and no password-less sudo: cannot run $1" >>"$_metacrm_browser_log"
        return 1
    fi
}
_metacrm_install_chromium() {
    command -v apt-get >/dev/null 2>&1 || {
        echo "browser-env: apt-get not found (not a Debian-like system)" >>"$_metacrm_browser_log"
        return 1
    }
    _metacrm_apt_install() {
        _metacrm_apt apt-get install -y -q --no-install-recommends \
            -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef \
            -o Dpkg::Options::=--force-confold chromium fonts-wqy-zenhei \
            </dev/null >>"$_metacrm_browser_log" 2>&1
    }
    _metacrm_apt_install && return 0
    echo "browser-env: install failed; refreshing the package index (apt-get update)" \
        >>"$_metacrm_browser_log"
    _metacrm_apt apt-get update -q -o DPkg::Lock::Timeout=300 </dev/null \
        >>"$_metacrm_browser_log" 2>&1 || return 1
    _metacrm_apt_install
}
# a CJK font too, or zh-Hant and zh-Hans labels show as empty boxes in screenshots
_metacrm_cjk_font=/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc
if [ ! -x "$_metacrm_chromium" ] || [ ! -e "$_metacrm_cjk_font" ]; then
    echo "browser-env: installing Debian's chromium and fonts-wqy-zenhei packages"
    _metacrm_started=$(date +%s)
    if _metacrm_install_chromium; then
        echo "browser-env: chromium installed in $(( $(date +%s) - _metacrm_started )) s"
    else
        tail -n 20 "$_metacrm_browser_log" >&2 2>/dev/null || true
    fi
fi
rm -f "$_metacrm_browser_log"
if [ -x "$_metacrm_chromium" ]; then
    export METACRM_CHROMIUM="$_metacrm_chromium"
    echo "browser-env: browser tests enabled ($METACRM_CHROMIUM)"
elif [ "${CI:-}" = "true" ]; then
    echo "browser-env: CI=true but no chromium at $_metacrm_chromium (install Debian's" \
         "\`chromium\` package): the browser tests are required in CI" >&2
    unset METACRM_CHROMIUM
    return 1 2>/dev/null || exit 1
else
    unset METACRM_CHROMIUM
    echo "browser-env: NOTICE: no chromium at $_metacrm_chromium and it could not be" \
         "installed (try \`sudo apt-get install chromium\`); the browser tests will be skipped"
fi
