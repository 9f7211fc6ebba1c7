#!/bin/sh
# systemd/install.sh ACTION: what `make install`, `make uninstall` and `make wheelhouse` run.
# docs/install.md says what goes where and why. Settings come from the environment (the
# Makefile passes its variables): PREFIX, BINDIR, SYSCONFDIR, UNITDIR, TMPFILESDIR, SLURM_USER,
# DESTDIR, WHEELHOUSE, INSTALL_PYTHON, CC, CFLAGS, LDFLAGS.
#
#   install     a virtualenv in PREFIX-<version> (PREFIX is a link to it) with the compiled
#               hook, the two commands linked into BINDIR, the unit and a drop-in naming
#               SLURM_USER, the tmpfiles entry, SYSCONFDIR/jobcompd/ files where absent; a
#               running unit is restarted on the new version. With DESTDIR: the same files
#               staged under DESTDIR for a package, nothing checked or started.
#   uninstall   removes what install put down; keeps the configuration, spool and state.
#   wheelhouse  wheels of jobcompd and of every dependency into WHEELHOUSE, so that a host
#               without network can run `make install WHEELHOUSE=DIR`.
set -eu
umask 022   # the service user must be able to read the virtualenv

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/opt/jobcompd}
BINDIR=${BINDIR:-/usr/local/bin}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UNITDIR=${UNITDIR:-/usr/local/lib/systemd/system}
TMPFILESDIR=${TMPFILESDIR:-/usr/local/lib/tmpfiles.d}
SLURM_USER=${SLURM_USER:-slurm}
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
WHEELHOUSE=${WHEELHOUSE:-}
INSTALL_PYTHON=${INSTALL_PYTHON:-}
CC=${CC:-cc}
MARKER=.jobcompd-install          # in every folder install built: uninstall removes only those
DROPIN=jobcompd.service.d/10-install.conf
HOOK_CFLAGS="-O2 -Wall -Wextra -std=c11 -D_GNU_SOURCE"
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

say() { printf 'jobcompd: %s\n' "$*"; }
die() { printf 'jobcompd: error: %s\n' "$*" >&2; exit 1; }

# --- Python ------------------------------------------------------------------------------

# python_ok PATH: a Python >= 3.11 with venv and ensurepip, outside home folders (the service
# user cannot read /root, and ProtectHome=yes hides /home from the unit).
python_ok() {
    [ -x "$1" ] || return 1
    _real=$(readlink -f "$1") || return 1
    case $_real in /root/* | /home/*) return 1 ;; esac
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

# find_python: INSTALL_PYTHON, or the distribution's python3, or its newest python3.1x.
find_python() {
    if [ -n "$INSTALL_PYTHON" ]; then
        python_ok "$INSTALL_PYTHON" || die "INSTALL_PYTHON=$INSTALL_PYTHON is not a Python >= 3.11\
 with the venv module outside /root and /home"
        echo "$INSTALL_PYTHON"
        return 0
    fi
    for _py in /usr/bin/python3 /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11; do
        if python_ok "$_py"; then
            echo "$_py"
            return 0
        fi
    done
    return 1
}

need_python() {
    find_python || die "no Python >= 3.11 with the venv module in /usr/bin: install python3 and\
 python3-venv (Debian, Ubuntu) or python3.11 (RHEL 8/9), or name one with INSTALL_PYTHON="
}

python_headers() {
    "$1" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
}

# ensure_build_deps: pip builds systemd-python from source (a C compiler, pkg-config, the
# libsystemd and Python headers); the hook needs the compiler too. Installed when missing.
# shellcheck disable=SC2086  # $_pkgs is a list of words
ensure_build_deps() {
    _py=$(find_python || true)
    if [ -n "$_py" ] && python_headers "$_py" && have_cc \
        && pkg-config --exists libsystemd 2>/dev/null; then
        return 0
    fi
    _ver=
    [ -z "$_py" ] || _ver=$("$_py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if command -v apt-get >/dev/null 2>&1; then
        _pkgs="python3 python3-venv python3-dev gcc pkg-config libsystemd-dev"
        [ -z "$_ver" ] || _pkgs="$_pkgs python$_ver-venv python$_ver-dev"
        say "installing $_pkgs (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $_pkgs >/dev/null \
            || { apt-get update -q >/dev/null \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $_pkgs >/dev/null; }
    elif command -v dnf >/dev/null 2>&1; then
        _pkgs="python3.11 python3.11-devel gcc pkgconf-pkg-config systemd-devel"
        [ -z "$_ver" ] || _pkgs="$_pkgs python$_ver-devel"
        say "installing $_pkgs (dnf)"
        dnf install -y -q $_pkgs
    else
        die "install a Python >= 3.11 with venv and headers, gcc, pkg-config and the libsystemd\
 headers, then run make install again"
    fi
}

# --- building a version ------------------------------------------------------------------

have_cc() { "$CC" --version >/dev/null 2>&1; }

source_version() {
    sed -n 's/^version *= *"\(.*\)"/\1/p' "$SRC/pyproject.toml"
}

current_target() {
    if [ -L "$DESTDIR$PREFIX" ]; then readlink "$DESTDIR$PREFIX"; fi
}

# target_dir VERSION: PREFIX-VERSION, or PREFIX-VERSION-2 when that one is in use, so that a
# re-install never writes under a running daemon.
target_dir() {
    if [ "$(current_target)" = "$PREFIX-$1" ]; then echo "$PREFIX-$1-2"; else echo "$PREFIX-$1"; fi
}

# clear_target DIR: a folder left there by an earlier install is replaced; anything else is not.
clear_target() {
    [ -e "$1" ] || return 0
    [ -f "$1/$MARKER" ] || die "$1 exists and was not made by make install: move it away"
    rm -rf "$1"
}

# build_venv DIR PYTHON VERSION: the virtualenv with jobcompd from the wheelhouse or this tree.
build_venv() {
    "$2" -m venv "$1"
    _pip="$1/bin/python -m pip"
    _what=$SRC
    [ -z "$WHEELHOUSE" ] || _what="--no-index --find-links $WHEELHOUSE jobcompd==$3"
    _compile=
    [ -z "$DESTDIR" ] || _compile=--no-compile     # compiled by relocate, with the final paths
    # shellcheck disable=SC2086  # words; paths with spaces would break the venv's shebangs anyway
    $_pip install --disable-pip-version-check --quiet --no-warn-script-location $_compile $_what
}

# build_hook DIR: the compiled hook becomes bin/jobcompd-spool (one process instead of the
# shell's six per record); the shell hook (jobcompd/hook/jobcompd-spool, which pip installs as
# bin/jobcompd-spool) stays beside it as bin/jobcompd-spool.sh, and stays the hook where there
# is no compiler. Built from the source the installed package ships (jobcompd/hook/).
build_hook() {
    cp -p "$1/bin/jobcompd-spool" "$1/bin/jobcompd-spool.sh"
    if ! have_cc; then
        say "no working C compiler (CC=$CC): the shell hook is the hook"
        return 0
    fi
    _c=$("$1/bin/python" -c 'import os, jobcompd
print(os.path.join(os.path.dirname(jobcompd.__file__), "hook", "jobcompd-spool.c"))')
    # shellcheck disable=SC2086  # the flags are words
    "$CC" $HOOK_CFLAGS ${CFLAGS:-} ${LDFLAGS:-} -o "$1/bin/jobcompd-spool.new" "$_c" \
        || die "the compiled hook did not build ($_c)"
    mv -f "$1/bin/jobcompd-spool.new" "$1/bin/jobcompd-spool"
}

# relocate STAGE FINAL: a virtualenv names its own path (script shebangs, activate,
# pyvenv.cfg); one built under DESTDIR must name the final path. Bytecode is compiled here,
# with the final paths in it.
relocate() {
    grep -rlIF -- "$1" "$1/bin" "$1/pyvenv.cfg" | while IFS= read -r _f; do
        sed -i "s|$1|$2|g" "$_f"
    done
    "$1/bin/python" -m compileall -q -f -s "$DESTDIR" -p / "$1/lib" >/dev/null
}

# build DIR PYTHON VERSION
build() {
    say "building jobcompd $3 in $1 with $2"
    mkdir -p "$(dirname "$1")"
    build_venv "$@"
    build_hook "$1"
    install -d "$1/share/jobcompd"
    install -m 0644 "$SRC/etc/jobcompd.conf" "$SRC/etc/rdkafka.conf" \
        "$SRC/etc/slurm.conf.snippet" "$1/share/jobcompd/"
    [ -z "$DESTDIR" ] || relocate "$1" "${1#"$DESTDIR"}"
    echo "$3" >"$1/$MARKER"
}

# --- what systemd and the operator see ---------------------------------------------------

# write_dropin USER: the unit stays as shipped; the user (and BINDIR, when not the default)
# is set in a drop-in that the next install replaces.
write_dropin() {
    cat <<EOF
# Written by make install (SLURM_USER=$1) and replaced by the next one: make your own changes
# with \`systemctl edit jobcompd\`, whose drop-in (override.conf) comes after this one.
[Service]
User=$1
EOF
    if [ "$BINDIR" != /usr/local/bin ]; then
        printf 'ExecStart=\nExecStart=%s/jobcompd run\n' "$BINDIR"
    fi
}

# write_tmpfiles USER GROUP: systemd/jobcompd.tmpfiles with the owner applied.
write_tmpfiles() {
    printf '# Written by make install from systemd/jobcompd.tmpfiles with SLURM_USER=%s.\n' "$1"
    printf '# A file /etc/tmpfiles.d/jobcompd.conf replaces this one.\n'
    awk -v u="$1" -v g="$2" '$1 == "d" && $4 == "slurm" && $5 == "slurm" { $4 = u; $5 = g } { print }' \
        "$SRC/systemd/jobcompd.tmpfiles"
}

install_units() {
    install -d "$DESTDIR$UNITDIR/jobcompd.service.d" "$DESTDIR$TMPFILESDIR"
    install -m 0644 "$SRC/systemd/jobcompd.service" "$DESTDIR$UNITDIR/jobcompd.service"
    write_dropin "$1" >"$DESTDIR$UNITDIR/$DROPIN"
    write_tmpfiles "$1" "$2" >"$DESTDIR$TMPFILESDIR/jobcompd.conf"
    for _over in /etc/systemd/system/jobcompd.service /etc/tmpfiles.d/jobcompd.conf; do
        if [ -z "$DESTDIR" ] && [ -e "$_over" ]; then
            say "warning: $_over (an earlier manual install?) overrides what make install put in\
 $UNITDIR and $TMPFILESDIR: remove it unless you mean it"
        fi
    done
}

# service_can_read USER GROUP FILE
service_can_read() {
    setpriv --reuid="$1" --regid="$2" --init-groups test -r "$3" 2>/dev/null
}

# install_config GROUP: the examples, only where no file is; readable by root and GROUP only.
install_config() {
    _dir=$DESTDIR$SYSCONFDIR/jobcompd
    _own=
    [ -n "$DESTDIR" ] || _own="-o root -g $1"
    # shellcheck disable=SC2086
    [ -d "$_dir" ] || install -d -m 0750 $_own "$_dir"
    for _f in jobcompd.conf rdkafka.conf; do
        if [ -e "$_dir/$_f" ] || [ -L "$_dir/$_f" ]; then
            say "kept $_dir/$_f (the shipped example is in $PREFIX/share/jobcompd/)"
            if [ -z "$DESTDIR" ] && ! service_can_read "$SLURM_USER" "$1" "$_dir/$_f"; then
                say "warning: $SLURM_USER cannot read $_dir/$_f, so jobcompd would exit 78:\
 chgrp $1 $_dir $_dir/$_f && chmod 0750 $_dir && chmod 0640 $_dir/$_f"
            fi
        else
            # shellcheck disable=SC2086
            install -m 0640 $_own "$SRC/etc/$_f" "$_dir/$_f"
            say "installed $_dir/$_f: edit it"
        fi
    done
}

# switch_to DIR: PREFIX points at DIR, in one rename; the commands are linked through PREFIX.
switch_to() {
    ln -s "$1" "$DESTDIR$PREFIX.new.$$"
    mv -T "$DESTDIR$PREFIX.new.$$" "$DESTDIR$PREFIX"
    install -d "$DESTDIR$BINDIR"
    for _c in jobcompd jobcompd-spool; do
        ln -sfn "$PREFIX/bin/$_c" "$DESTDIR$BINDIR/$_c"
    done
}

check_links_free() {
    if [ -e "$DESTDIR$PREFIX" ] && [ ! -L "$DESTDIR$PREFIX" ]; then
        die "$DESTDIR$PREFIX is a folder, not the link make install keeps there (an earlier manual\
 install?): move it away, or choose another PREFIX="
    fi
    for _c in jobcompd jobcompd-spool; do
        if [ -e "$DESTDIR$BINDIR/$_c" ] && [ ! -L "$DESTDIR$BINDIR/$_c" ]; then
            die "$DESTDIR$BINDIR/$_c is a file, not a link (pip install into the system Python?):\
 remove it first"
        fi
    done
}

# prune KEEP...: remove the versions install built, except those named.
prune() {
    for _d in "$DESTDIR$PREFIX"-*; do
        [ -f "$_d/$MARKER" ] || continue
        case " $* " in *" ${_d#"$DESTDIR"} "*) continue ;; esac
        rm -rf "$_d"
    done
}

systemd_runs() { [ -d /run/systemd/system ]; }

# restart_if_running PREVIOUS: the unit runs the new version from now on.
restart_if_running() {
    systemd_runs || { say "systemd is not running here: not reloading units"; return 0; }
    systemctl daemon-reload
    if ! systemctl is-active --quiet jobcompd.service; then
        say "next: edit $SYSCONFDIR/jobcompd/*.conf, run \`jobcompd check --connect\`, then\
 \`systemctl enable --now jobcompd\`"
        return 0
    fi
    say "restarting jobcompd.service on the new version"
    systemctl restart jobcompd.service || die "jobcompd did not start on the new version (see\
 journalctl -u jobcompd); to go back: ln -sfn $1 $PREFIX && systemctl restart jobcompd"
}

require_root() {
    [ "$(id -u)" = 0 ] || die "make $1 needs root (make install DESTDIR=DIR stages the files as\
 any user)"
}

# slurm_group: SLURM_USER's primary group; it must exist unless staging for a package.
slurm_group() {
    if [ -n "$DESTDIR" ]; then echo "${SLURM_GROUP:-$SLURM_USER}"; return 0; fi
    id -u "$SLURM_USER" >/dev/null 2>&1 || die "SLURM_USER=$SLURM_USER does not exist. It must\
 be slurm.conf's SlurmUser, which runs the hook and owns the spool: install Slurm first, or\
 create the account (useradd --system --no-create-home --shell /usr/sbin/nologin\
 $SLURM_USER), or run make install SLURM_USER=<your SlurmUser>"
    id -gn "$SLURM_USER"
}

# --- actions -----------------------------------------------------------------------------

do_install() {
    [ -n "$DESTDIR" ] || require_root install
    _group=$(slurm_group)
    [ -n "$DESTDIR" ] || [ -n "$WHEELHOUSE" ] || ensure_build_deps
    _py=$(need_python)
    _version=$(source_version)
    check_links_free
    _prev=$(current_target)
    if [ -n "$DESTDIR" ]; then _target=$PREFIX-$_version; else _target=$(target_dir "$_version"); fi
    clear_target "$DESTDIR$_target"
    build "$DESTDIR$_target" "$_py" "$_version"
    install_units "$SLURM_USER" "$_group"
    install_config "$_group"
    switch_to "$_target"
    say "$PREFIX -> $_target; $BINDIR/jobcompd and $BINDIR/jobcompd-spool link there"
    if [ -n "$DESTDIR" ]; then
        say "staged in $DESTDIR: the package creates $SLURM_USER, runs systemd-tmpfiles --create\
 jobcompd.conf and chgrp $_group $SYSCONFDIR/jobcompd $SYSCONFDIR/jobcompd/*.conf"
        return 0
    fi
    if command -v systemd-tmpfiles >/dev/null 2>&1; then
        systemd-tmpfiles --create jobcompd.conf
    fi
    restart_if_running "${_prev:-(none)}"
    prune "$_target" "$_prev"
}

remove_link() {
    if [ -L "$1" ] && [ "$(readlink "$1")" = "$2" ]; then rm -f "$1"; fi
}

do_uninstall() {
    [ -z "$DESTDIR" ] || die "uninstall removes an installed jobcompd; remove a staging tree with rm"
    require_root uninstall
    if systemd_runs && [ -e "$UNITDIR/jobcompd.service" ]; then
        systemctl disable --now jobcompd.service || true
    fi
    for _c in jobcompd jobcompd-spool; do remove_link "$BINDIR/$_c" "$PREFIX/bin/$_c"; done
    prune
    [ ! -L "$PREFIX" ] || rm -f "$PREFIX"
    rm -f "$UNITDIR/jobcompd.service" "$UNITDIR/$DROPIN" "$TMPFILESDIR/jobcompd.conf"
    rmdir "$UNITDIR/jobcompd.service.d" 2>/dev/null || true
    if systemd_runs; then systemctl daemon-reload; fi
    say "removed; kept $SYSCONFDIR/jobcompd/, the spool (/var/spool/jobcompd) and the state\
 (/var/lib/jobcompd). slurm.conf may still name $BINDIR/jobcompd-spool."
}

do_wheelhouse() {
    _dir=${WHEELHOUSE:-wheelhouse}
    _py=$(need_python)
    _tmp=$(mktemp -d)
    trap 'rm -rf "$_tmp"' EXIT
    "$_py" -m venv "$_tmp/venv"
    "$_tmp/venv/bin/python" -m pip wheel --disable-pip-version-check --quiet -w "$_dir" "$SRC"
    say "wheels for $("$_py" -c 'import platform; print("Python", platform.python_version(),\
 platform.machine())') in $_dir: make install WHEELHOUSE=$_dir installs from them with no network"
}

case ${1:-} in
    install) do_install ;;
    uninstall) do_uninstall ;;
    wheelhouse) do_wheelhouse ;;
    *) die "usage: $0 install|uninstall|wheelhouse (run through make)" ;;
esac
