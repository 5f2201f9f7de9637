#!/usr/bin/env bash
# Run tests/unit/test_native.py and tests/unit/test_native_callback.py on every pyenv CPython
# 3.10-3.13 present, each in its own throwaway venv holding only pytest, trustme and
# hypothesis.
# Prints one line per interpreter; exits non-zero if any run fails.
set -u

repo="$(cd "$(dirname "$0")/.." && pwd)"
pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
status=0
found=0

for minor in 10 11 12 13; do
    # The newest installed patch release of 3.<minor>, skipping free-threaded (t) builds.
    python="$(ls -d "$pyenv_root"/versions/3."$minor".*/bin/python3 2>/dev/null \
        | grep -v 't/bin/' | sort -V | tail -n 1)"
    [ -n "$python" ] || continue
    found=$((found + 1))
    version="$("$python" -c 'import platform; print(platform.python_version())')"
    work="$(mktemp -d "/tmp/aiotlspool-native-$version.XXXXXX")"
    log="$work/log"
    if ! "$python" -m venv "$work/venv" >"$log" 2>&1 \
        || ! "$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            pytest trustme hypothesis >>"$log" 2>&1; then
        echo "$version: FAIL (venv or install; log kept at $log)"
        status=1
        continue
    fi
    # An empty ini and --noconftest keep the project's pytest settings and
    # fixtures (which may need other plugins) out of this isolated run.
    printf '[pytest]\n' >"$work/pytest.ini"
    if (cd "$repo" && PYTHONPATH="$repo" "$work/venv/bin/python" -m pytest \
            -c "$work/pytest.ini" --rootdir "$repo" --noconftest -p no:cacheprovider \
            -q -rs tests/unit/test_native.py tests/unit/test_native_callback.py) >>"$log" 2>&1; then
        summary="$(grep -E '^[0-9]+ (passed|skipped)' "$log" | tail -n 1)"
        if grep -qE '^[0-9]+ skipped' <<<"$summary"; then
            # A skip means the native binding was refused on this interpreter.
            echo "$version: SKIP ($(grep -m1 -o 'native binding unavailable: .*' "$log" || echo "$summary"))"
            status=1
        else
            echo "$version: PASS ($summary)"
        fi
        rm -rf "$work"
    else
        echo "$version: FAIL ($(tail -n 1 "$log"); log kept at $log)"
        status=1
    fi
done

if [ "$found" -eq 0 ]; then
    echo "no pyenv CPython 3.10-3.13 found under $pyenv_root/versions"
    status=1
fi
exit "$status"
