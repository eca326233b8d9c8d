#!/usr/bin/env bash
# install_test.sh CMAKE BUILD_DIR SOURCE_DIR CC CXX VERSION - the installed
# product works on its own: `cmake --install` into a temporary prefix, then
# pkg-config finds it, a plain compiler builds examples/embed.c against the
# installed header and library only, and the program runs with the
# installed libflotilla.so. The header must also compile as C++.
set -euo pipefail
source "$(dirname "$0")/common.sh"

if [ $# -ne 6 ]; then
  echo "usage: install_test.sh CMAKE BUILD_DIR SOURCE_DIR CC CXX VERSION" >&2
  exit 2
fi
cmake=$1 build=$2 source=$3 cc=$4 cxx=$5 version=$6
work=$(mktemp -d "${TMPDIR:-/tmp}/flotilla-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

fail() {
  echo "product-install: $*" >&2
  exit 1
}

"$cmake" --install "$build" --prefix "$prefix" >"$work/install.log" ||
  { cat "$work/install.log" >&2; fail "cmake --install failed"; }

pc=$(find "$prefix" -name flotilla.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pc" ] || fail "no flotilla.pc under $prefix"
PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
installed_version=$(pkg-config --modversion flotilla) || fail "pkg-config does not find flotilla"
[ "$installed_version" = "$version" ] || fail "flotilla.pc says $installed_version, not $version"
libdir=$(pkg-config --variable=libdir flotilla)
case "$libdir" in
"$prefix"/*) ;;
*) fail "flotilla.pc points at $libdir, outside the prefix $prefix" ;;
esac

# The flags an embedder uses, and nothing from the source or build tree.
read -r -a flags <<<"$(pkg-config --cflags --libs flotilla)"
read -r -a cflags <<<"$(pkg-config --cflags flotilla)"
"$cc" -std=gnu17 -Wall -Wextra -Werror "$source/examples/embed.c" "${flags[@]}" \
  -o "$work/embed" || fail "examples/embed.c does not build against the installed library"
echo '#include <flotilla.h>' >"$work/header.cc"
"$cxx" -std=c++17 -Wall -Wextra -Werror -fsyntax-only "${cflags[@]}" \
  "$work/header.cc" || fail "flotilla.h does not compile as C++"

export LD_LIBRARY_PATH=$libdir
LD_TRACE_LOADED_OBJECTS=1 "$work/embed" | grep -q "libflotilla.so.* => $libdir/" ||
  fail "embed does not load libflotilla from $libdir"
run_embed product-install "$work/embed" "$work/data"
echo "product-install: installed to $prefix, built with pkg-config and ran"
