# Sourced by `make test`: exports METACRM_TEST_PG_URL when a PostgreSQL server answers,
# starting the local cluster first when it is installed but down (CI machines).
# The PostgreSQL leg is required when CI=true: a CI run without it fails loudly.
_metacrm_pg_url="${METACRM_TEST_PG_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}"
_metacrm_pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! _metacrm_pg_ready && command -v pg_ctlcluster >/dev/null 2>&1; then
    for _v in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster --skip-systemctl-redirect "$_v" main start >/dev/null 2>&1 || true
    done
    for _i in 1 2 3 4 5 6 7 8 9 10; do _metacrm_pg_ready && break; sleep 1; done
fi
if _metacrm_pg_ready; then
    export METACRM_TEST_PG_URL="$_metacrm_pg_url"
    echo "test-env: PostgreSQL leg enabled ($METACRM_TEST_PG_URL)"
elif [ "${CI:-}" = "true" ]; then
    echo "test-env: CI=true but PostgreSQL does not answer on 127.0.0.1:5432" >&2
    return 1 2>/dev/null || exit 1
else
    echo "test-env: PostgreSQL not reachable; running the SQLite leg only"
fi
